//! `mount.fuse.snapahead`: the mount(8) helper for `-t fuse.snapahead` and
//! fstab lines (see `snapahead::cli::fstab`). Built as
//! `mount-fuse-snapahead` (a crate target cannot have dots in its name);
//! `make install` puts it at `/sbin/mount.fuse.snapahead`, where mount(8)
//! looks for it.

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    snapahead::cli::fstab::helper_main(&argv)
}
