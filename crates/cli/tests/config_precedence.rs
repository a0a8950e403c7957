//! `taurus master start` settings: flags > `TAURUS_*` environment > config file > defaults,
//! checked on the real binary by where the master listens and where it keeps its data.

use std::net::TcpListener;
use std::net::TcpStream;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file_port, env_port) = (free_port(), free_port());
    let file = dir.path().join("master.toml");
    std::fs::write(
        &file,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{file_port}\"\ndata_dir = \"{}\"\n[peers]\n1 = \"127.0.0.1:{env_port}\"\n",
            dir.path().join("from-file").display()
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_taurus"))
        .args(["master", "start", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("from-flag"))
        .env("TAURUS_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("TAURUS_DATA_DIR", dir.path().join("from-env"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start master");
    let _guard = Killed(child);

    // The environment's listen address wins over the file's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", env_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "master never listened on the TAURUS_LISTEN port {env_port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "the file's listen address must lose"
    );
    // The flag's data directory wins over the environment's and the file's.
    assert!(
        dir.path().join("from-flag").is_dir(),
        "data dir from the flag was not used"
    );
    assert!(
        !dir.path().join("from-env").exists(),
        "TAURUS_DATA_DIR must lose to --data-dir"
    );
    assert!(
        !dir.path().join("from-file").exists(),
        "the file's data_dir must lose"
    );
}
