pub async fn run(
    _args: crate::args::AgentStartArgs,
    _ctx: &crate::Context,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("agent start: not wired yet")
}
