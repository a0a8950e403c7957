//! [`TailBuffer`]: the last N bytes of a stream, in bounded memory whatever the stream's length.

use std::collections::VecDeque;

/// Keeps only the last `capacity` bytes pushed into it.
#[derive(Clone, Debug)]
pub struct TailBuffer {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Bytes pushed in total (kept or not).
    total: u64,
}

impl TailBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(capacity.min(64 * 1024)),
            capacity,
            total: 0,
        }
    }

    /// Appends `bytes`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.capacity == 0 {
            return;
        }
        if bytes.len() >= self.capacity {
            self.buf.clear();
            self.buf.extend(&bytes[bytes.len() - self.capacity..]);
            return;
        }
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    /// Bytes pushed in total, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept bytes, oldest first.
    pub fn bytes(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// The kept bytes as text: a UTF-8 sequence cut at the start is skipped, other invalid bytes
    /// become U+FFFD, and the result is cut again (at a character boundary, keeping the end) to
    /// at most `capacity` bytes in case replacements made it longer.
    pub fn to_string_lossy(&self) -> String {
        let bytes = self.bytes();
        let mut start = 0;
        // A cut in the middle of a character leaves up to 3 continuation bytes at the front.
        if self.total > self.buf.len() as u64 {
            while start < bytes.len().min(3) && (bytes[start] & 0xC0) == 0x80 {
                start += 1;
            }
        }
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        keep_end(text, self.capacity)
    }
}

/// The end of `s`, at most `max` bytes, cut at a character boundary.
fn keep_end(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_across_pushes_of_any_size() {
        let mut t = TailBuffer::new(5);
        t.push(b"ab");
        assert_eq!(t.bytes(), b"ab");
        t.push(b"cde");
        assert_eq!(t.bytes(), b"abcde");
        t.push(b"f");
        assert_eq!(t.bytes(), b"bcdef");
        t.push(b"0123456789");
        assert_eq!(t.bytes(), b"56789");
        t.push(b"");
        assert_eq!(t.bytes(), b"56789");
        assert_eq!(t.total(), 16);
        let mut t = TailBuffer::new(0);
        t.push(b"abc");
        assert!(t.bytes().is_empty());
    }

    #[test]
    fn a_character_cut_at_the_front_is_skipped_not_replaced() {
        let mut t = TailBuffer::new(4);
        t.push("xé€".as_bytes()); // x, é = 2 bytes, € = 3 bytes: 6 bytes
        // Kept: the second byte of é, then €.
        assert_eq!(t.to_string_lossy(), "€");
        let mut t = TailBuffer::new(8);
        t.push(b"ok\xffok");
        assert_eq!(t.to_string_lossy(), "ok\u{fffd}ok");
    }

    #[test]
    fn replacement_characters_never_push_the_text_past_the_bound() {
        let mut t = TailBuffer::new(6);
        t.push(&[0xff; 6]);
        let s = t.to_string_lossy();
        assert!(s.len() <= 6, "{} bytes", s.len());
        assert_eq!(s, "\u{fffd}\u{fffd}");
    }
}
