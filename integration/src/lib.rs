//! The integration suite of the jetmq servers lives in `tests/`: every test runs against the
//! tokio shell (`jetmq`) and the mio shell (`jetmq-mio`), through real sockets on 127.0.0.1.
