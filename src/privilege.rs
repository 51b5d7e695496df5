//! `--user USER` / `--group GROUP` (SPEC §13): who the daemon runs as once it has bound its
//! listeners.
//!
//! - [`resolve`], while the command line is parsed: names (or numeric ids) become a
//!   [`Target`]; an unknown one is a usage error, before anything is bound.
//! - [`check`], at start before anything is bound: a switch this process has no right to
//!   make (not root, and not already the target) is the start's one-line error, exit 1.
//! - [`switch`], after every listener is bound and before a client is served (with
//!   `--workers`, in the supervisor before the first fork): supplementary groups dropped,
//!   then the group, then the user, and the result verified (a later `setuid(0)` fails).
//!
//! A process already running as the target ([`already_switched`]) does nothing: that is
//! how an image started again in place by a reload (same binary path, same arguments, same
//! pid, but no longer root) comes up without needing a privilege it gave away.

use std::fmt;
use std::io;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Cut, Error};

/// Who to become: a user (with `--user`) and always a group (`--group`, or the user's
/// primary group). Names are kept for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `--user`: the user id and its name (or the number as typed, if it has no entry).
    pub user: Option<(u32, String)>,
    /// The group id and its name (or the number as typed).
    pub group: (u32, String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((uid, name)) = &self.user {
            write!(f, "user '{}' (uid {uid}), ", Cut(name))?;
        }
        let (gid, name) = &self.group;
        write!(f, "group '{}' (gid {gid})", Cut(name))
    }
}

/// The ids a process runs with: real, effective and saved user and group ids, and the
/// supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    /// Real, effective, saved user id.
    pub uid: [u32; 3],
    /// Real, effective, saved group id.
    pub gid: [u32; 3],
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Ids {
    /// This process's ids now.
    pub fn current() -> io::Result<Ids> {
        let u = nix::unistd::getresuid()?;
        let g = nix::unistd::getresgid()?;
        let groups = nix::unistd::getgroups()?;
        Ok(Ids {
            uid: [u.real, u.effective, u.saved].map(Uid::as_raw),
            gid: [g.real, g.effective, g.saved].map(Gid::as_raw),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
        })
    }
}

/// Does a process with `ids` already run as `target`, so that there is nothing to switch?
/// Every one of the real, effective and saved ids must be the target's (so none can be
/// switched back), and no supplementary group may be left but the target group itself. A
/// reload's new image, started by a process that has already switched, finds exactly that.
pub fn already_switched(ids: &Ids, target: &Target) -> bool {
    let gid = target.group.0;
    let user_done = target
        .user
        .as_ref()
        .is_none_or(|(uid, _)| ids.uid.iter().all(|u| u == uid));
    user_done && ids.gid.iter().all(|g| *g == gid) && ids.groups.iter().all(|g| *g == gid)
}

/// `--user`/`--group` as typed → the [`Target`], or the usage error's message. A value is
/// looked up as a name first, then taken as a number: a numeric user must have an entry in
/// the user database unless `--group` says which group to use (its primary group is
/// otherwise unknown); a numeric group needs none.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Target>, Error> {
    let invalid = |value: &str, flag: &str, why: &str| {
        Error::Usage(format!(
            "invalid value '{}' for '--{flag}': {why}",
            Cut(value)
        ))
    };
    let lookup = |what: &str, e: nix::errno::Errno| {
        Error::io(
            format!("cannot look up {what}"),
            io::Error::from_raw_os_error(e as i32),
        )
    };
    let group = match group {
        None => None,
        Some(s) => {
            let found =
                Group::from_name(s).map_err(|e| lookup(&format!("group '{}'", Cut(s)), e))?;
            match (found, numeric(s)) {
                (Some(g), _) => Some((g.gid.as_raw(), g.name)),
                (None, Some(gid)) => Some((gid, s.to_string())),
                (None, None) => return Err(invalid(s, "group", "no such group")),
            }
        }
    };
    let Some(u) = user else {
        return Ok(group.map(|group| Target { user: None, group }));
    };
    let found = User::from_name(u).map_err(|e| lookup(&format!("user '{}'", Cut(u)), e))?;
    let found = match (found, numeric(u)) {
        (Some(entry), _) => Some(entry),
        (None, Some(uid)) => User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup(&format!("user '{}'", Cut(u)), e))?,
        (None, None) => return Err(invalid(u, "user", "no such user")),
    };
    let (uid, name, primary) = match found {
        Some(entry) => (entry.uid.as_raw(), entry.name, Some(entry.gid.as_raw())),
        None => (numeric(u).unwrap_or_default(), u.to_string(), None),
    };
    let group = match (group, primary) {
        (Some(group), _) => group,
        (None, Some(gid)) => {
            let name = Group::from_gid(Gid::from_raw(gid))
                .ok()
                .flatten()
                .map_or_else(|| gid.to_string(), |g| g.name);
            (gid, name)
        }
        (None, None) => {
            return Err(invalid(
                u,
                "user",
                "no such user (a numeric id without an entry needs --group)",
            ))
        }
    };
    Ok(Some(Target {
        user: Some((uid, name)),
        group,
    }))
}

/// A plain decimal id (`65534`), not a name.
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // (uid_t)-1 means "unchanged" to the set*id calls: never a target.
    s.parse::<u32>().ok().filter(|id| *id != u32::MAX)
}

/// Every listener is bound (the `--metrics` one too) and nothing is served yet: publish
/// the pid file while its directory may still be written, give the unix socket files this
/// process created to the target (so `--socket-mode` speaks of the daemon's own user and
/// group, and the daemon can remove them at exit), then [`switch`]. Nothing without a
/// target.
pub fn after_binding<'a>(
    target: Option<&Target>,
    socket_files: impl Iterator<Item = &'a Path>,
) -> Result<(), Error> {
    let Some(target) = target else {
        return Ok(());
    };
    crate::pidfile::publish();
    let uid = target.user.as_ref().map(|(uid, _)| *uid);
    for path in socket_files {
        if let Err(e) = std::os::unix::fs::lchown(path, uid, Some(target.group.0)) {
            let context = format!("cannot give {} to {target}", path.display());
            return Err(Error::io(context, e));
        }
    }
    switch(target)
}

/// CAP_SETGID and CAP_SETUID (capability(7) numbers).
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// The effective capability set from `/proc/self/status`'s `CapEff:` line (hex).
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// May a process with `ids` and effective capabilities `caps` make the switch to `target`?
fn may_switch(ids: &Ids, caps: Option<u64>, target: &Target) -> bool {
    if already_switched(ids, target) || ids.uid[1] == 0 {
        return true;
    }
    let has = |cap: u32| caps.is_some_and(|c| c & (1 << cap) != 0);
    has(CAP_SETGID) && (target.user.is_none() || has(CAP_SETUID))
}

/// At start, before anything is bound: can this process make the switch at all? Not root
/// (nor holding CAP_SETUID/CAP_SETGID), and not already the target: one line, exit 1.
pub fn check(target: &Target) -> Result<(), Error> {
    let ids = Ids::current().map_err(|e| Error::io("cannot read this process's ids", e))?;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s));
    if may_switch(&ids, caps, target) {
        return Ok(());
    }
    let mut why = format!("not running as root (uid {})", ids.uid[1]);
    let without_groups = Ids {
        groups: Vec::new(),
        ..ids.clone()
    };
    if already_switched(&without_groups, target) {
        let groups: Vec<String> = ids.groups.iter().map(u32::to_string).collect();
        why += &format!(
            ", so supplementary groups {} cannot be dropped",
            groups.join(",")
        );
    }
    Err(Error::io(
        format!("cannot switch to {target}"),
        io::Error::other(why),
    ))
}

/// Become `target` for good: supplementary groups dropped, then the group, then the user
/// (in that order: once the user is switched, the group could no longer be), and verify it.
/// Nothing to do if this process already runs as the target (see [`already_switched`]).
pub fn switch(target: &Target) -> Result<(), Error> {
    let fail = |e: io::Error| Error::io(format!("cannot switch to {target}"), e);
    let errno = |e: nix::errno::Errno| io::Error::from_raw_os_error(e as i32);
    let ids = Ids::current().map_err(fail)?;
    if already_switched(&ids, target) {
        log::debug!("already running as {target}");
        return Ok(());
    }
    let gid = Gid::from_raw(target.group.0);
    nix::unistd::setgroups(&[]).map_err(|e| fail(errno(e)))?;
    nix::unistd::setgid(gid).map_err(|e| fail(errno(e)))?;
    if let Some((uid, _)) = &target.user {
        nix::unistd::setuid(Uid::from_raw(*uid)).map_err(|e| fail(errno(e)))?;
    }
    verify(target).map_err(fail)?;
    log::info!("running as {target}, no supplementary groups");
    Ok(())
}

/// The switch took: every id is the target's, no supplementary group is left, and a
/// non-root user cannot become root again.
fn verify(target: &Target) -> io::Result<()> {
    let ids = Ids::current()?;
    if !already_switched(&ids, target) {
        return Err(io::Error::other(format!(
            "the ids did not change as asked (uids {:?}, gids {:?}, groups {:?})",
            ids.uid, ids.gid, ids.groups
        )));
    }
    if target.user.as_ref().is_some_and(|(uid, _)| *uid != 0)
        && nix::unistd::setuid(Uid::from_raw(0)).is_ok()
    {
        return Err(io::Error::other("setuid(0) still succeeds afterwards"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uid: Option<u32>, gid: u32) -> Target {
        Target {
            user: uid.map(|u| (u, format!("u{u}"))),
            group: (gid, format!("g{gid}")),
        }
    }

    fn ids(uid: [u32; 3], gid: [u32; 3], groups: &[u32]) -> Ids {
        Ids {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn already_switched_needs_every_id_and_no_other_group() {
        let nobody = target(Some(65534), 65534);
        // A reload's new image after the switch: nothing left to do.
        assert!(already_switched(&ids([65534; 3], [65534; 3], &[]), &nobody));
        assert!(already_switched(
            &ids([65534; 3], [65534; 3], &[65534]),
            &nobody
        ));
        // Root before the switch.
        assert!(!already_switched(&ids([0; 3], [0; 3], &[0]), &nobody));
        // A saved id that could switch back, a group left over, the wrong group.
        assert!(!already_switched(
            &ids([65534, 65534, 0], [65534; 3], &[]),
            &nobody
        ));
        assert!(!already_switched(
            &ids([65534; 3], [65534, 65534, 0], &[]),
            &nobody
        ));
        assert!(!already_switched(
            &ids([65534; 3], [65534; 3], &[27]),
            &nobody
        ));
        assert!(!already_switched(&ids([65534; 3], [100; 3], &[]), &nobody));
        // --group alone: any user, only the group counts.
        let group = target(None, 65534);
        assert!(already_switched(&ids([0; 3], [65534; 3], &[]), &group));
        assert!(already_switched(&ids([1000; 3], [65534; 3], &[]), &group));
        assert!(!already_switched(&ids([0; 3], [0; 3], &[]), &group));
    }

    #[test]
    fn who_may_switch() {
        let nobody = target(Some(65534), 65534);
        let user = ids([1000; 3], [1000; 3], &[24, 1000]);
        assert!(may_switch(&ids([0; 3], [0; 3], &[0]), None, &nobody));
        assert!(!may_switch(&user, Some(0), &nobody));
        assert!(!may_switch(&user, None, &nobody));
        // CAP_SETGID alone is enough for --group, not for --user.
        assert!(may_switch(&user, Some(1 << CAP_SETGID), &target(None, 5)));
        assert!(!may_switch(&user, Some(1 << CAP_SETGID), &nobody));
        let both = (1 << CAP_SETGID) | (1 << CAP_SETUID);
        assert!(may_switch(&user, Some(both), &nobody));
        // Already the target (a reload's new image): nothing to switch, so no right needed.
        assert!(may_switch(&ids([65534; 3], [65534; 3], &[]), None, &nobody));
    }

    #[test]
    fn capabilities_from_proc_status() {
        let status = "Name:\techo-mux\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c0\n";
        assert_eq!(effective_caps(status), Some(0xc0));
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn numeric_ids() {
        assert_eq!(numeric("65534"), Some(65534));
        assert_eq!(numeric("0"), Some(0));
        for bad in ["", "-1", "+5", "1e3", "nobody", "4294967295", "99999999999"] {
            assert_eq!(numeric(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_and_numbers_resolve() {
        let root = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!(root.user.as_ref().map(|u| u.0), Some(0));
        assert_eq!(root.group.0, 0);
        assert_eq!(resolve(Some("0"), None).unwrap(), Some(root.clone()));
        let with_group = resolve(Some("root"), Some("12345")).unwrap().unwrap();
        assert_eq!(with_group.group, (12345, "12345".to_string()));
        let group_only = resolve(None, Some("0")).unwrap().unwrap();
        assert_eq!((group_only.user, group_only.group.0), (None, 0));
        assert_eq!(resolve(None, None).unwrap(), None);
        assert_eq!(
            root.to_string(),
            "user 'root' (uid 0), group 'root' (gid 0)"
        );
    }

    #[test]
    fn unknown_names_are_usage_errors() {
        let msg = |user, group| match resolve(user, group) {
            Err(Error::Usage(m)) => m,
            other => panic!("{user:?} {group:?}: {other:?}"),
        };
        assert_eq!(
            msg(Some("no-such-user-x"), None),
            "invalid value 'no-such-user-x' for '--user': no such user"
        );
        assert_eq!(
            msg(None, Some("no-such-group-x")),
            "invalid value 'no-such-group-x' for '--group': no such group"
        );
        // A numeric user without an entry: its primary group is unknown.
        let m = msg(Some("4000000000"), None);
        assert!(m.contains("needs --group"), "{m}");
        let t = resolve(Some("4000000000"), Some("4000000000"))
            .unwrap()
            .unwrap();
        assert_eq!(t.user.map(|u| u.0), Some(4_000_000_000));
        assert!(!msg(Some(&"x".repeat(5000)), None).contains(&"x".repeat(200)));
    }

    #[test]
    fn check_refuses_without_the_right() {
        let me = Ids::current().unwrap();
        let other = target(Some(me.uid[1].wrapping_add(1).max(1)), 12345);
        match check(&other) {
            Ok(()) => assert!(me.uid[1] == 0 || me.uid.contains(&0), "{me:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 1);
                let line = e.to_string();
                assert!(line.contains("not running as root"), "{line}");
                assert!(!line.contains('\n'), "{line}");
            }
        }
    }
}
