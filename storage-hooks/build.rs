//! Names the kqueue systems once: `cfg(kqueue)` is set where the watcher
//! uses kqueue (macOS, iOS and the BSDs), so the source does not repeat the
//! list of target OSes at every use.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kqueue)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "macos" | "ios" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        println!("cargo::rustc-cfg=kqueue");
    }
}
