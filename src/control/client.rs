//! The command's side of the control socket: connect, send one request,
//! pass the progress lines on, return the final reply — or say that no
//! daemon serves the socket (none there, or a stale file nobody listens
//! on), so the command can do the work itself.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{Reply, ReplyLine, Request};
use crate::error::Error;
use crate::statedir;

/// What asking the daemon gave.
#[derive(Debug)]
pub enum Answer {
    /// The daemon answered.
    Reply(Reply),
    /// No daemon serves the socket; the text says how that was seen.
    NoDaemon(String),
}

/// Send `request` to the daemon serving `state_dir`'s control socket and
/// wait for its reply, passing each progress line to `on_info`.
pub fn ask(state_dir: &Path, request: &Request, on_info: &mut dyn FnMut(&str)) -> Result<Answer, Error> {
    let path = statedir::control_socket(state_dir);
    let connection = match UnixStream::connect(&path) {
        Ok(connection) => connection,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Answer::NoDaemon(format!("there is no control socket {}", path.display())));
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Ok(Answer::NoDaemon(format!(
                "nothing listens on the control socket {} (left by a daemon that is gone)",
                path.display()
            )));
        }
        Err(e) => return Err(Error::local("connect to the control socket", &path, e)),
    };
    let line = request.to_line().map_err(Error::Usage)?;
    // A server that answers and closes before it has read the whole
    // request (a refusal; the server reads the request line first, but a
    // line too long is cut short) makes the write fail with a broken pipe
    // while the answer waits to be read, so the reply is read then too.
    if let Err(e) = (&connection).write_all(format!("{line}\n").as_bytes())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(Error::local("send the request on the control socket", &path, e));
    }
    read_reply(&connection, &path, on_info).map(Answer::Reply)
}

fn read_reply(
    connection: &UnixStream,
    path: &PathBuf,
    on_info: &mut dyn FnMut(&str),
) -> Result<Reply, Error> {
    let mut lines = BufReader::new(connection).lines();
    loop {
        let line = match lines.next() {
            Some(line) => line.map_err(|e| Error::local("read the daemon's answer on", path, e))?,
            None => {
                let closed = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection before answering (it may have stopped; see its log)",
                );
                return Err(Error::local("read the daemon's answer on", path, closed));
            }
        };
        match ReplyLine::parse(&line) {
            Ok(ReplyLine::Info(text)) => on_info(&text),
            Ok(ReplyLine::Final(reply)) => return Ok(reply),
            Err(why) => {
                return Err(Error::local("read the daemon's answer on", path, io::Error::other(why)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::server::{ControlServer, Handler};
    use super::super::{Outcome, info_line};
    use super::*;
    use crate::test_support::TempDir;

    fn echo_handler(calls: Arc<AtomicUsize>) -> Handler {
        Arc::new(move |request, info| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (Request::Snapshot { stream } | Request::Prune { stream, .. }) = request;
            info(&format!("working on {stream}"));
            match stream.as_str() {
                "bad" => Reply::new(Outcome::Failed, "job 3 of stream bad failed"),
                _ => Reply::new(Outcome::Ok, format!("job 2 of stream {stream} succeeded")),
            }
        })
    }

    #[test]
    fn a_request_gets_its_progress_and_reply_and_the_socket_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("control-ask");
        let calls = Arc::new(AtomicUsize::new(0));
        let server = ControlServer::start(&dir.0, echo_handler(Arc::clone(&calls))).unwrap().unwrap();
        let socket = statedir::control_socket(&dir.0);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
        let mut infos = Vec::new();
        let ask_for = |stream: &str, infos: &mut Vec<String>| {
            ask(&dir.0, &Request::Snapshot { stream: stream.into() }, &mut |t| infos.push(t.to_string()))
        };
        match ask_for("s", &mut infos).unwrap() {
            Answer::Reply(reply) => assert_eq!(reply, Reply::new(Outcome::Ok, "job 2 of stream s succeeded")),
            other => panic!("{other:?}"),
        }
        assert_eq!(infos, ["working on s"]);
        match ask_for("bad", &mut infos).unwrap() {
            Answer::Reply(reply) => assert_eq!(reply.outcome, Outcome::Failed),
            other => panic!("{other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        server.stop();
        assert!(!socket.exists(), "removed at stop");
        assert!(
            matches!(ask_for("s", &mut infos).unwrap(), Answer::NoDaemon(why) if why.contains("no control socket"))
        );
    }

    #[test]
    fn a_stale_socket_is_no_daemon_and_is_replaced_at_start() {
        let dir = TempDir::new("control-stale");
        let socket = statedir::control_socket(&dir.0);
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // a killed daemon's file
        let request = Request::Snapshot { stream: "s".into() };
        match ask(&dir.0, &request, &mut |_| {}).unwrap() {
            Answer::NoDaemon(why) => assert!(why.contains("nothing listens"), "{why}"),
            other => panic!("{other:?}"),
        }
        let server = ControlServer::start(&dir.0, echo_handler(Arc::default())).unwrap().unwrap();
        assert!(matches!(ask(&dir.0, &request, &mut |_| {}).unwrap(), Answer::Reply(_)));
        server.stop();
    }

    #[test]
    fn a_second_server_on_the_same_state_dir_serves_nothing() {
        let dir = TempDir::new("control-second");
        let first = ControlServer::start(&dir.0, echo_handler(Arc::default())).unwrap().unwrap();
        // flock locks belong to the open file: a second open in this
        // process conflicts as a second process would.
        assert!(ControlServer::start(&dir.0, echo_handler(Arc::default())).unwrap().is_none());
        let request = Request::Snapshot { stream: "s".into() };
        assert!(
            matches!(ask(&dir.0, &request, &mut |_| {}).unwrap(), Answer::Reply(_)),
            "the first still serves"
        );
        first.stop();
    }

    #[test]
    fn bad_requests_get_a_usage_reply_and_the_server_lives_on() {
        let dir = TempDir::new("control-bad");
        let calls = Arc::new(AtomicUsize::new(0));
        let server = ControlServer::start(&dir.0, echo_handler(Arc::clone(&calls))).unwrap().unwrap();
        let socket = statedir::control_socket(&dir.0);
        for request in ["frobnicate\n".to_string(), "snapshot\n".into(), "x".repeat(10_000)] {
            let mut connection = UnixStream::connect(&socket).unwrap();
            connection.write_all(request.as_bytes()).unwrap();
            let _ = connection.shutdown(std::net::Shutdown::Write);
            let mut answer = String::new();
            let _ = io::Read::read_to_string(&mut connection, &mut answer);
            assert!(answer.is_empty() || answer.starts_with("usage "), "{answer:?}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(info_line("a").starts_with("info "));
        let request = Request::Snapshot { stream: "s".into() };
        assert!(matches!(ask(&dir.0, &request, &mut |_| {}).unwrap(), Answer::Reply(_)));
        server.stop();
    }
}
