//! DHT wire decoders (requests, responses, records).
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_proto::dht::{Record, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(Request::decode(&r.encode()).ok(), Some(r));
    }
    if let Ok(r) = Response::decode(data) {
        assert_eq!(Response::decode(&r.encode()).ok(), Some(r));
    }
    let _ = Record::decode(data);
});
