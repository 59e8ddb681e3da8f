//! ENABLE (RFC 5161): CONDSTORE and QRESYNC.

use imap_types::extensions::enable::CapabilityEnable;

use crate::session::Session;

impl Session {
    /// ENABLE cap...
    pub(crate) fn op_enable(&mut self, tag: &str, caps: &[CapabilityEnable<'_>]) {
        let mut newly = Vec::new();
        for cap in caps {
            let name = cap.to_string().to_ascii_uppercase();
            match name.as_str() {
                "CONDSTORE" if !self.enabled.condstore => {
                    self.enabled.condstore = true;
                    newly.push("CONDSTORE");
                }
                "QRESYNC" if !self.enabled.qresync => {
                    // QRESYNC implies CONDSTORE (RFC 7162 3.2.3).
                    self.enabled.qresync = true;
                    self.enabled.condstore = true;
                    newly.push("QRESYNC");
                }
                _ => {}
            }
        }
        if newly.is_empty() {
            self.out.extend_from_slice(b"* ENABLED\r\n");
        } else {
            self.out.extend_from_slice(format!("* ENABLED {}\r\n", newly.join(" ")).as_bytes());
        }
        self.ok(tag, "Enabled.");
    }
}
