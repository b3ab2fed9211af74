use super::*;

fn scratch(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("fslens-out-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn staged_folder_appears_only_when_finished() {
    let root = scratch("staged");
    let target = root.join("run");
    let dest = Destination::new(&target, "run");
    {
        let out = OutputDir::create(&dest).unwrap();
        std::fs::write(out.path().join("a.txt"), "x").unwrap();
        assert!(!target.exists());
        assert!(live::is_registered(out.path()));
        // Dropped without finish: nothing is left behind.
    }
    assert!(!target.exists());
    assert!(names(&root).is_empty());
    let out = OutputDir::create(&dest).unwrap();
    std::fs::write(out.path().join("b.txt"), "y").unwrap();
    let staging = out.path().to_path_buf();
    out.finish().unwrap();
    assert!(!live::is_registered(&staging));
    assert!(target.join("b.txt").exists());
    assert_eq!(Marker::read(&target).unwrap().command, "run");
    // A second run replaces the first (an fslens folder, no --force needed).
    let out = OutputDir::create(&Destination::new(&target, "demo")).unwrap();
    std::fs::write(out.path().join("c.txt"), "z").unwrap();
    out.finish().unwrap();
    assert!(target.join("c.txt").exists() && !target.join("b.txt").exists());
    assert_eq!(Marker::read(&target).unwrap().command, "demo");
    assert_eq!(names(&root), ["run"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn foreign_folders_links_and_files_are_refused_unless_forced() {
    let root = scratch("refuse");
    let mine = root.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let e = OutputDir::create(&Destination::new(&mine, "run"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&mine.display().to_string())
            && e.contains("--force")
            && e.contains("another --out")
            && e.contains("\"notes.txt\""),
        "{e}"
    );
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"keep me");
    assert_eq!(names(&root), ["mine"], "no staging is left by a refusal");
    // An empty folder holds nothing to lose.
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    OutputDir::create(&Destination::new(&empty, "run"))
        .unwrap()
        .finish()
        .unwrap();
    assert!(Marker::read(&empty).is_some());
    // A file is refused even with --force.
    let file = root.join("file");
    std::fs::write(&file, "data").unwrap();
    let e = OutputDir::create(&Destination::new(&file, "run").force(true))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a file"), "{e}");
    // A link to an fslens folder: refused; forced, the link is replaced, not its folder.
    let link = root.join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let e = OutputDir::create(&Destination::new(&link, "run"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("symbolic link"), "{e}");
    OutputDir::create(&Destination::new(&link, "run").force(true))
        .unwrap()
        .finish()
        .unwrap();
    assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(Marker::read(&empty).is_some());
    // Forced, the foreign folder is replaced.
    OutputDir::create(&Destination::new(&mine, "run").force(true))
        .unwrap()
        .finish()
        .unwrap();
    assert!(!mine.join("notes.txt").exists() && Marker::read(&mine).is_some());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_fslens_folder_holding_an_input_is_refused_unless_forced() {
    let root = scratch("input");
    let out = root.join("out");
    OutputDir::create(&Destination::new(&out, "run"))
        .unwrap()
        .finish()
        .unwrap();
    let config = out.join("config.toml");
    std::fs::write(&config, "edited").unwrap();
    let dest = Destination::new(&out, "run").inputs([root.join("other.toml"), config.clone()]);
    let e = OutputDir::create(&dest).err().unwrap().to_string();
    assert!(e.contains("config.toml") && e.contains("input"), "{e}");
    assert_eq!(std::fs::read(&config).unwrap(), b"edited");
    OutputDir::create(&dest.force(true))
        .unwrap()
        .finish()
        .unwrap();
    assert!(!config.exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_folder_appearing_during_the_work_is_not_replaced() {
    let root = scratch("appear");
    let target = root.join("out");
    let out = OutputDir::create(&Destination::new(&target, "run")).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("user.txt"), "mine").unwrap();
    let e = out.finish().unwrap_err().to_string();
    assert!(e.contains("fslens did not write it"), "{e}");
    assert_eq!(std::fs::read(target.join("user.txt")).unwrap(), b"mine");
    assert_eq!(names(&root), ["out"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resumable_folders_are_kept_and_marked() {
    let root = scratch("resume");
    let sweep = root.join("sw");
    let dest = Destination::new(&sweep, "sweep");
    let never = |_: &Path| false;
    open_resumable(&dest, &never).unwrap();
    assert_eq!(Marker::read(&sweep).unwrap().command, "sweep");
    std::fs::create_dir(sweep.join("jobs")).unwrap();
    // Resumed: kept as it is.
    open_resumable(&dest, &never).unwrap();
    assert!(sweep.join("jobs").is_dir());
    // A folder from before markers, recognised: kept and marked.
    let old = root.join("old");
    std::fs::create_dir_all(old.join("jobs")).unwrap();
    let looks = |p: &Path| p.join("jobs").is_dir();
    open_resumable(&Destination::new(&old, "sweep"), &looks).unwrap();
    assert!(old.join("jobs").is_dir() && Marker::read(&old).is_some());
    // A foreign folder is refused, forced it is replaced by an empty marked one.
    let foreign = root.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("x"), "x").unwrap();
    let e = open_resumable(&Destination::new(&foreign, "sweep"), &never)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    assert!(foreign.join("x").exists());
    open_resumable(&Destination::new(&foreign, "sweep").force(true), &never).unwrap();
    assert_eq!(names(&foreign), [MARKER]);
    // Another command's fslens folder is replaced.
    let run = root.join("run");
    OutputDir::create(&Destination::new(&run, "run"))
        .unwrap()
        .finish()
        .unwrap();
    std::fs::write(run.join("summary.json"), "{}").unwrap();
    open_resumable(&Destination::new(&run, "sweep"), &never).unwrap();
    assert_eq!(names(&run), [MARKER]);
    assert_eq!(Marker::read(&run).unwrap().command, "sweep");
    std::fs::remove_dir_all(&root).unwrap();
}
