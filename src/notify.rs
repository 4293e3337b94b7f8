//! systemd's notify protocol (`sd_notify(3)`), with std alone: when
//! `$NOTIFY_SOCKET` is set, the daemon sends `READY=1` once its streams run,
//! a one-line `STATUS=` summary when it changes, `WATCHDOG=1` at half of
//! `$WATCHDOG_USEC`, `RELOADING=1` … `READY=1` around a reload and
//! `STOPPING=1` when asked to stop.
//!
//! Notifying is best effort: a failure is logged once as a warning and never
//! stops the daemon. The pure parts (the socket address, the watchdog
//! interval, the status line) are separate functions, tested directly.
//! Deliberately left out: file descriptor passing, `vsock:` addresses, and
//! unsetting `$NOTIFY_SOCKET` for child processes (with `Type=notify`,
//! systemd only listens to the main process unless `NotifyAccess=` widens it).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::status::StreamStatus;

/// Longest `STATUS=` text sent; systemd shows it on one line of
/// `systemctl status`, and a datagram must stay well under its 4 KiB limit.
const MAX_STATUS_CHARS: usize = 400;

/// How long a send may block (systemd's queue full) before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends notifications to systemd, or does nothing when not run by it.
pub struct Notifier {
    /// The socket and where to send; `None` without `$NOTIFY_SOCKET`.
    channel: Option<(UnixDatagram, SocketAddr)>,
    /// `$NOTIFY_SOCKET` as given, for messages.
    described: String,
    /// Whether a failure has already been logged.
    warned: bool,
    /// How often to send `WATCHDOG=1`, when systemd's watchdog is on.
    watchdog_interval: Option<Duration>,
    /// When `WATCHDOG=1` was last sent.
    last_ping: Instant,
    /// The last `STATUS=` text sent, to send only changes.
    last_status: Option<String>,
}

impl Notifier {
    /// A notifier for what the environment says: `$NOTIFY_SOCKET`,
    /// `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let var = |name: &str| std::env::var(name).ok();
        let watchdog = watchdog_interval(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        Notifier::new(var("NOTIFY_SOCKET").as_deref(), watchdog)
    }

    /// A notifier sending to `notify_socket` (a path, or `@name` in the
    /// abstract namespace), pinging the watchdog every `watchdog_interval`.
    /// Without a socket it does nothing; a bad one is warned about once.
    pub fn new(notify_socket: Option<&str>, watchdog_interval: Option<Duration>) -> Notifier {
        let mut notifier = Notifier {
            channel: None,
            described: notify_socket.unwrap_or_default().to_string(),
            warned: false,
            watchdog_interval: None,
            last_ping: Instant::now(),
            last_status: None,
        };
        let Some(address) = notify_socket.filter(|s| !s.is_empty()) else {
            return notifier;
        };
        let opened = socket_address(address).and_then(|target| {
            let socket = UnixDatagram::unbound().map_err(|e| format!("cannot create a socket: {e}"))?;
            let _ = socket.set_write_timeout(Some(SEND_TIMEOUT));
            Ok((socket, target))
        });
        match opened {
            Ok(channel) => {
                notifier.channel = Some(channel);
                notifier.watchdog_interval = watchdog_interval;
            }
            Err(reason) => notifier.warn(&reason),
        }
        notifier
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.channel.is_some()
    }

    /// How often the daemon must call [`keep_alive`](Self::keep_alive), if
    /// the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_interval
    }

    /// `READY=1` with the current status: startup done, or a reload done.
    pub fn ready(&mut self, status: &str) {
        let status = one_line(status);
        self.send(&format!("READY=1\nSTATUS={status}"));
        self.last_status = Some(status);
    }

    /// `RELOADING=1`: a reload starts; [`ready`](Self::ready) ends it.
    pub fn reloading(&mut self, status: &str) {
        let status = one_line(status);
        let message = format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}", monotonic_usec());
        self.send(&message);
        self.last_status = Some(status);
    }

    /// `STOPPING=1`: shutting down.
    pub fn stopping(&mut self, status: &str) {
        let status = one_line(status);
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
        self.last_status = Some(status);
    }

    /// `STATUS=…`, only if it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        let status = one_line(status);
        if self.last_status.as_ref() != Some(&status) {
            self.send(&format!("STATUS={status}"));
            self.last_status = Some(status);
        }
    }

    /// `WATCHDOG=1` if the watchdog is on and a ping is due.
    pub fn keep_alive(&mut self) {
        if let Some(interval) = self.watchdog_interval
            && self.last_ping.elapsed() >= interval
        {
            self.last_ping = Instant::now();
            self.send("WATCHDOG=1");
        }
    }

    /// Send one datagram; a failure is warned about once, then ignored.
    fn send(&mut self, message: &str) {
        let Some((socket, target)) = &self.channel else { return };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), target) {
            self.warn(&format!("cannot send to it: {e}"));
        }
    }

    fn warn(&mut self, reason: &str) {
        if !self.warned {
            self.warned = true;
            log::warn!(
                "cannot notify systemd through NOTIFY_SOCKET={}: {reason}; carrying on without \
                 (systemd may see no readiness, status or watchdog pings)",
                self.described
            );
        }
    }
}

/// The socket address of `$NOTIFY_SOCKET`: an absolute path, or `@name` for
/// Linux's abstract namespace.
pub fn socket_address(notify_socket: &str) -> Result<SocketAddr, String> {
    if let Some(name) = notify_socket.strip_prefix('@') {
        return SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("not a usable abstract socket name: {e}"));
    }
    if !notify_socket.starts_with('/') {
        return Err("expected an absolute path or @name".into());
    }
    SocketAddr::from_pathname(notify_socket).map_err(|e| format!("not a usable socket path: {e}"))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when that is a
/// positive number and `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// The one-line summary shown by `systemctl status`: stream count, total
/// lag, and the first failing stream's error.
pub fn status_line(statuses: &[StreamStatus]) -> String {
    let count = statuses.len();
    let lag: u64 = statuses.iter().map(|s| s.lag_segments).sum();
    let mut line =
        format!("archiving {count} stream{}; lag {lag} segment{}", plural(count as u64), plural(lag));
    let mut failing = statuses.iter().filter_map(|s| s.last_error.as_deref().map(|e| (&s.stream, e)));
    match failing.next() {
        None => line.push_str("; no errors"),
        Some((stream, error)) => {
            // Stream errors usually name their stream already.
            let prefix = format!("stream {stream}");
            if error.starts_with(&prefix) {
                line.push_str(&format!("; {error}"));
            } else {
                line.push_str(&format!("; {prefix}: {error}"));
            }
            let more = failing.count();
            if more > 0 {
                line.push_str(&format!(" (and {more} more failing)"));
            }
        }
    }
    // The bandwidth schedule and the data budget hold every stream alike.
    if let Some(held) = statuses.iter().find_map(|s| s.held.as_deref()) {
        line.push_str(&format!("; uploads held: {held}"));
    }
    line
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `text` on one line (a newline would start a new assignment) and at most
/// 400 characters (`MAX_STATUS_CHARS`), "…" marking a cut.
pub fn one_line(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match flat.char_indices().nth(MAX_STATUS_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// `CLOCK_MONOTONIC` in microseconds, which newer systemd wants with
/// `RELOADING=1` to match the reload request.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000).saturating_add(now.tv_nsec as u64 / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(
        name: &str,
        archived: Option<u64>,
        committed: Option<u64>,
        error: Option<&str>,
    ) -> StreamStatus {
        StreamStatus {
            stream: name.into(),
            archived_position: archived,
            committed_position: committed,
            lag_segments: crate::plan::lag_segments(committed, archived, Some(0)),
            last_error: error.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_this_process() {
        let half = Some(Duration::from_millis(100));
        #[rustfmt::skip]
        let cases = [
            (Some("200000"), None, half),
            (Some(" 200000 "), None, half),
            (Some("200000"), Some("42"), half),
            (Some("200000"), Some("43"), None),
            (Some("200000"), Some("x"), None),
            (Some("60000000"), None, Some(Duration::from_secs(30))),
            (Some("0"), None, None),
            (Some(""), None, None),
            (Some("-5"), None, None),
            (Some("1.5"), None, None),
            (None, Some("42"), None),
            (None, None, None),
        ];
        for (usec, pid, expected) in cases {
            assert_eq!(watchdog_interval(usec, pid, 42), expected, "{usec:?} {pid:?}");
        }
    }

    #[test]
    fn status_line_sums_lag_and_names_the_first_error() {
        #[rustfmt::skip]
        let cases: Vec<(Vec<StreamStatus>, &str)> = vec![
            (vec![], "archiving 0 streams; lag 0 segments; no errors"),
            (vec![stream("s", Some(5), Some(5), None)], "archiving 1 stream; lag 0 segments; no errors"),
            (
                vec![stream("a", Some(5), Some(6), None), stream("b", None, Some(2), None)],
                "archiving 2 streams; lag 4 segments; no errors",
            ),
            (vec![stream("a", Some(5), Some(6), None)], "archiving 1 stream; lag 1 segment; no errors"),
            (
                vec![stream("a", None, None, None), stream("b", None, None, Some("target down"))],
                "archiving 2 streams; lag 0 segments; stream b: target down",
            ),
            (
                vec![stream("a", None, None, Some("stream a: disk full")), stream("b", None, None, Some("x"))],
                "archiving 2 streams; lag 0 segments; stream a: disk full (and 1 more failing)",
            ),
            (
                vec![StreamStatus {
                    held: Some("waiting for the 19:00 window (bandwidth_schedule)".into()),
                    ..stream("a", None, None, None)
                }],
                "archiving 1 stream; lag 0 segments; no errors; \
                 uploads held: waiting for the 19:00 window (bandwidth_schedule)",
            ),
        ];
        for (statuses, expected) in cases {
            assert_eq!(status_line(&statuses), expected);
        }
    }

    #[test]
    fn one_line_flattens_and_shortens() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        let long = "é".repeat(MAX_STATUS_CHARS + 10);
        let short = one_line(&long);
        assert_eq!(short.chars().count(), MAX_STATUS_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(one_line(&"x".repeat(MAX_STATUS_CHARS)), "x".repeat(MAX_STATUS_CHARS));
    }

    #[test]
    fn socket_addresses() {
        let abstract_address = socket_address("@walship/notify").expect("abstract");
        assert_eq!(abstract_address.as_abstract_name(), Some(&b"walship/notify"[..]));
        let path = socket_address("/run/systemd/notify").expect("path");
        assert_eq!(path.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        assert!(socket_address("relative/path").is_err());
        assert!(socket_address(&format!("/{}", "x".repeat(200))).is_err(), "longer than sun_path");
    }

    #[test]
    fn sends_to_an_abstract_socket_and_only_changed_status() {
        let name = format!("walship-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        receiver.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut notifier = Notifier::new(Some(&format!("@{name}")), Some(Duration::ZERO));
        assert!(notifier.is_active());
        notifier.ready("archiving 1 stream");
        notifier.status("archiving 1 stream");
        notifier.status("archiving 1 stream\nsecond line");
        notifier.keep_alive();
        notifier.stopping("stopping");
        let mut received = Vec::new();
        for _ in 0..4 {
            let mut buffer = [0u8; 4096];
            let n = receiver.recv(&mut buffer).expect("a datagram");
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        assert_eq!(
            received,
            [
                "READY=1\nSTATUS=archiving 1 stream",
                "STATUS=archiving 1 stream second line",
                "WATCHDOG=1",
                "STOPPING=1\nSTATUS=stopping",
            ]
        );
    }

    #[test]
    fn without_a_socket_or_with_a_dead_one_nothing_fails() {
        let mut quiet = Notifier::new(None, Some(Duration::ZERO));
        assert!(!quiet.is_active());
        assert_eq!(quiet.watchdog_interval(), None);
        quiet.ready("x");
        quiet.keep_alive();
        let mut dead = Notifier::new(Some("/nonexistent/walship/notify"), None);
        dead.ready("x");
        dead.ready("y");
        assert!(dead.warned);
        let bad = Notifier::new(Some("relative"), None);
        assert!(bad.warned && !bad.is_active());
    }
}
