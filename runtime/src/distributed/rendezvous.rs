//! How the ranks of a GPU run find each other before NCCL can: rank 0 hands one blob (NCCL's
//! unique id) to every other rank over TCP at the master address, as torchrun's store does.
//! This carries the id only; every collective after it is NCCL's.
//!
//! Each rank connects to `MASTER_ADDR:MASTER_PORT` (retrying while rank 0 is not up yet),
//! says who it is, and reads the blob; rank 0 answers every rank of the world once, and an
//! answer that does not come within the timeout is an error that names the address.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// What a rank sends first: the protocol, its rank and the world it believes in.
const HELLO: &[u8; 12] = b"fulmen-rdzv1";

/// Rank 0's side: waits until each of ranks `1..world` has connected on `listener` and sent
/// its hello, and gives each `blob`.
pub fn serve(listener: &TcpListener, world: usize, blob: &[u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error(&addr, "listen", e))?;
    let mut seen = vec![false; world];
    seen[0] = true;
    while seen.iter().any(|s| !s) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (0..world)
                        .filter(|&r| !seen[r])
                        .map(|r| r.to_string())
                        .collect();
                    return Err(Error::msg(format!(
                        "rendezvous at {addr}: rank(s) {} did not connect within {:.0} s (did they start? is MASTER_ADDR/MASTER_PORT the same for all ranks?)",
                        missing.join(", "),
                        timeout.as_secs_f64()
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(io_error(&addr, "accept", e)),
        };
        let rank = greet(stream, world, blob, deadline).map_err(|e| io_error(&addr, "hello", e))?;
        match rank {
            // Something that is not a rank of this run (a port scanner, a stale rank of
            // another run): it gets nothing, and the wait goes on.
            Hello::Stranger => {}
            Hello::Rank(r) if r >= world || r == 0 => {}
            Hello::Rank(r) if seen[r] => {
                return Err(Error::msg(format!(
                    "rendezvous at {addr}: rank {r} connected twice; two processes were given the same RANK"
                )))
            }
            Hello::Rank(r) => seen[r] = true,
            Hello::OtherWorld(r, w) => {
                return Err(Error::msg(format!(
                    "rendezvous at {addr}: rank {r} was started for a world of {w} processes, rank 0 for {world}; give every rank the same WORLD_SIZE"
                )))
            }
        }
    }
    Ok(())
}

enum Hello {
    Rank(usize),
    OtherWorld(usize, usize),
    Stranger,
}

fn greet(mut s: TcpStream, world: usize, blob: &[u8], deadline: Instant) -> std::io::Result<Hello> {
    s.set_nonblocking(false)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    let mut hello = [0u8; 20];
    if s.read_exact(&mut hello).is_err() || &hello[..12] != HELLO {
        return Ok(Hello::Stranger);
    }
    let word = |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
    let (rank, their_world) = (word(12) as usize, word(16) as usize);
    if their_world != world {
        return Ok(Hello::OtherWorld(rank, their_world));
    }
    if rank < world && rank > 0 {
        s.write_all(&(blob.len() as u32).to_le_bytes())?;
        s.write_all(blob)?;
        s.flush()?;
    }
    Ok(Hello::Rank(rank))
}

/// Rank `rank`'s side: the blob rank 0 serves at `addr:port`.
pub fn fetch(
    addr: &str,
    port: u16,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let at = format!("{addr}:{port}");
    let target = (addr, port)
        .to_socket_addrs()
        .map_err(|e| io_error(&at, "resolve", e))?
        .next()
        .ok_or_else(|| Error::msg(format!("rendezvous: `{at}` resolves to no address")))?;
    let mut last = None;
    let mut stream = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::msg(format!(
                "rendezvous: rank 0 did not answer at {at} within {:.0} s ({}); is rank 0 running, and is MASTER_ADDR/MASTER_PORT the same for all ranks?",
                timeout.as_secs_f64(),
                last.map_or("no attempt".to_string(), |e: std::io::Error| e.to_string())
            )));
        }
        match TcpStream::connect_timeout(&target, left.min(Duration::from_secs(1))) {
            Ok(s) => break s,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let read = |stream: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_read_timeout(Some(left))?;
        let mut hello = HELLO.to_vec();
        hello.extend((rank as u32).to_le_bytes());
        hello.extend((world as u32).to_le_bytes());
        stream.write_all(&hello)?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let mut blob = vec![0u8; u32::from_le_bytes(len) as usize];
        stream.read_exact(&mut blob)?;
        Ok(blob)
    };
    read(&mut stream).map_err(|e| {
        Error::msg(format!(
            "rendezvous at {at}: rank 0 did not hand over the NCCL id to rank {rank}: {e} (rank 0 refuses a rank whose WORLD_SIZE differs from its own)"
        ))
    })
}

fn io_error(at: &str, what: &str, e: std::io::Error) -> Error {
    Error::msg(format!("rendezvous at {at}: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    #[test]
    fn every_rank_gets_rank_zeros_blob() {
        let (l, port) = listener();
        let blob: Vec<u8> = (0..128).collect();
        let peers: Vec<_> = (1..4)
            .map(|r| {
                std::thread::spawn(move || {
                    fetch("127.0.0.1", port, r, 4, Duration::from_secs(10)).unwrap()
                })
            })
            .collect();
        serve(&l, 4, &blob, Duration::from_secs(10)).unwrap();
        for p in peers {
            assert_eq!(p.join().unwrap(), blob);
        }
    }

    #[test]
    fn a_rank_that_starts_before_rank_zero_waits_for_it() {
        let (l, port) = listener();
        drop(l);
        let peer =
            std::thread::spawn(move || fetch("127.0.0.1", port, 1, 2, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        serve(&l, 2, b"id", Duration::from_secs(10)).unwrap();
        assert_eq!(peer.join().unwrap().unwrap(), b"id");
    }

    #[test]
    fn missing_ranks_and_other_worlds_are_named() {
        let (l, port) = listener();
        let e = serve(&l, 3, b"id", Duration::from_millis(200)).unwrap_err();
        assert!(
            e.to_string().contains("rank(s) 1, 2 did not connect"),
            "{e}"
        );

        let peer =
            std::thread::spawn(move || fetch("127.0.0.1", port, 1, 4, Duration::from_secs(5)));
        let e = serve(&l, 2, b"id", Duration::from_secs(5)).unwrap_err();
        assert!(
            e.to_string()
                .contains("rank 1 was started for a world of 4"),
            "{e}"
        );
        assert!(peer.join().unwrap().is_err());

        let e = fetch("127.0.0.1", port, 1, 2, Duration::from_millis(300)).unwrap_err();
        assert!(
            e.to_string().contains("did not hand over") || e.to_string().contains("did not answer"),
            "{e}"
        );
    }

    #[test]
    fn a_stranger_on_the_port_is_ignored() {
        let (l, port) = listener();
        let stranger = std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        });
        let peer =
            std::thread::spawn(move || fetch("127.0.0.1", port, 1, 2, Duration::from_secs(10)));
        serve(&l, 2, b"id", Duration::from_secs(10)).unwrap();
        stranger.join().unwrap();
        assert_eq!(peer.join().unwrap().unwrap(), b"id");
    }
}
