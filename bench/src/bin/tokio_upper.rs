//! The baseline: the "upper" protocol on tokio, written the idiomatic way
//! (multi-thread runtime, a task per connection, `BufReader`/`BufWriter`,
//! flush when no more input is buffered), for `bench/run.sh` to compare
//! oneshotd against.
//!
//! ```text
//! tokio_upper --addr 127.0.0.1:7879 --workers 2 [--backlog 4096]
//! ```
//!
//! `--backlog` sets the accept queue's length (`bench/scale.sh` gives both
//! servers `oneshotd.socket`'s 4096); without it, `TcpListener::bind`'s.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:7879".parse().unwrap();
    let mut workers = 2;
    let mut backlog = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("flag value");
        match flag.as_str() {
            "--addr" => addr = value.parse().expect("--addr"),
            "--workers" => workers = value.parse().expect("--workers"),
            "--backlog" => backlog = Some(value.parse().expect("--backlog")),
            _ => panic!("unknown flag {flag}"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(addr, backlog))
}

async fn serve(addr: SocketAddr, backlog: Option<u32>) -> std::io::Result<()> {
    let listener = match backlog {
        None => TcpListener::bind(addr).await?,
        Some(backlog) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)?
        }
    };
    eprintln!("tokio_upper listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = handle(stream).await;
        });
    }
}

async fn handle(stream: TcpStream) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        line.make_ascii_uppercase();
        writer.write_all(&line).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}
