//! Decodes arbitrary bytes as the control messages of `dormouse who` /
//! `dormouse kick`: the master's control socket ([`imap::server::admin`]),
//! the master's questions to a worker, and a hibernate process's control
//! messages. Must never panic; whatever decodes re-encodes to the same.
#![no_main]

use hibernate::driver::control::{self, ControlReply, ControlRequest};
use imap::server::admin::{self, AdminReply, AdminRequest};
use imap::server::worker_report::WorkerRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = admin::decode::<AdminRequest>(data) {
        assert_eq!(admin::decode::<AdminRequest>(&admin::encode(&request)).unwrap(), request);
    }
    if let Ok(reply) = admin::decode::<AdminReply>(data) {
        assert_eq!(admin::decode::<AdminReply>(&admin::encode(&reply)).unwrap(), reply);
    }
    if let Ok(request) = WorkerRequest::decode(data) {
        assert_eq!(WorkerRequest::decode(&request.encode()).unwrap(), request);
    }
    if let Ok(request) = control::decode::<ControlRequest>(data) {
        assert_eq!(control::decode::<ControlRequest>(&control::encode(&request)).unwrap(), request);
    }
    if let Ok(reply) = control::decode::<ControlReply>(data) {
        assert_eq!(control::decode::<ControlReply>(&control::encode(&reply)).unwrap(), reply);
    }
});
