//! The running kernel's layout: struct field offsets from its BTF, tracepoint field offsets
//! from its tracepoint formats. Builds the `CONFIG` global the BPF programs read everything at.
use std::{fs::File, os::unix::fs::FileExt, path::Path};

use agent_common::{
    Config, Offsets,
    config::{ABSENT, TracepointFields},
};
use btfparse::{Readable, TypeInformation};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read kernel BTF at {path}: {reason} (Tether needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)")]
    Btf { path: String, reason: String },
    #[error("kernel BTF has no struct {0}")]
    NoType(String),
    #[error("kernel BTF: {ty}.{field} not found: {reason}")]
    NoField { ty: String, field: String, reason: String },
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: String, source: std::io::Error },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoTracepointField { tracepoint: String, field: String },
}

struct BtfFile(File);

impl Readable for BtfFile {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        self.0.read_exact_at(buffer, offset).map_err(|e| e.into())
    }
}

/// Offsets of every struct field the programs read, from a BTF file.
pub fn offsets_from_btf(path: &Path) -> Result<Offsets, LayoutError> {
    let btf_err = |reason: String| LayoutError::Btf {
        path: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| btf_err(e.to_string()))?;
    let ti = TypeInformation::new(&BtfFile(file)).map_err(|e| btf_err(format!("{e:?}")))?;
    let off = |ty: &str, field: &str| -> Result<u32, LayoutError> {
        let id = ti.id_of(ty).ok_or_else(|| LayoutError::NoType(ty.to_string()))?;
        match ti.offset_of(id, field) {
            Ok((_, btfparse::Offset::ByteOffset(o))) => Ok(o),
            Ok((_, other)) => Err(LayoutError::NoField {
                ty: ty.into(),
                field: field.into(),
                reason: format!("not byte-aligned ({other:?})"),
            }),
            Err(e) => Err(LayoutError::NoField {
                ty: ty.into(),
                field: field.into(),
                reason: format!("{e:?}"),
            }),
        }
    };
    Ok(Offsets {
        task_tgid: off("task_struct", "tgid")?,
        task_real_parent: off("task_struct", "real_parent")?,
        task_group_leader: off("task_struct", "group_leader")?,
        task_start_boottime: off("task_struct", "start_boottime")?,
        task_exit_code: off("task_struct", "exit_code")?,
        task_mm: off("task_struct", "mm")?,
        task_fs: off("task_struct", "fs")?,
        task_files: off("task_struct", "files")?,
        mm_arg_start: off("mm_struct", "arg_start")?,
        mm_arg_end: off("mm_struct", "arg_end")?,
        mm_exe_file: off("mm_struct", "exe_file")?,
        fs_root: off("fs_struct", "root")?,
        fs_pwd: off("fs_struct", "pwd")?,
        files_fdt: off("files_struct", "fdt")?,
        fdt_max_fds: off("fdtable", "max_fds")?,
        fdt_fd: off("fdtable", "fd")?,
        file_f_path: off("file", "f_path")?,
        file_f_inode: off("file", "f_inode")?,
        path_mnt: off("path", "mnt")?,
        path_dentry: off("path", "dentry")?,
        dentry_d_parent: off("dentry", "d_parent")?,
        dentry_d_name_len: off("dentry", "d_name.len")?,
        dentry_d_name_name: off("dentry", "d_name.name")?,
        vfsmount_mnt_root: off("vfsmount", "mnt_root")?,
        mount_mnt: off("mount", "mnt")?,
        mount_mnt_parent: off("mount", "mnt_parent")?,
        mount_mnt_mountpoint: off("mount", "mnt_mountpoint")?,
        inode_i_ino: off("inode", "i_ino")?,
        inode_i_sb: off("inode", "i_sb")?,
        sb_s_dev: off("super_block", "s_dev")?,
    })
}

/// Field offsets of one tracepoint format file (`field:TYPE NAME; offset:N; ...`).
pub fn parse_format(text: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        let offset = parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.trim().parse::<u32>().ok());
        // The name is the last identifier of the declaration, before any array suffix.
        let name = decl.rsplit(' ').next().unwrap_or("").split('[').next().unwrap_or("");
        if let (false, Some(offset)) = (name.is_empty(), offset) {
            out.push((name.to_string(), offset));
        }
    }
    out
}

fn tracepoint_fields(tracefs: &Path, category: &str, name: &str) -> Result<Vec<(String, u32)>, LayoutError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| LayoutError::Format {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_format(&text))
}

fn field(fields: &[(String, u32)], tracepoint: &str, name: &str) -> Result<u32, LayoutError> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, o)| *o)
        .ok_or_else(|| LayoutError::NoTracepointField {
            tracepoint: tracepoint.into(),
            field: name.into(),
        })
}

/// Tracepoint field offsets from the running kernel's tracefs.
pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointFields, LayoutError> {
    let exec = tracepoint_fields(tracefs, "sched", "sched_process_exec")?;
    let exit = tracepoint_fields(tracefs, "sched", "sched_process_exit")?;
    let enter = tracepoint_fields(tracefs, "syscalls", "sys_enter_openat")?;
    let sys_exit = tracepoint_fields(tracefs, "syscalls", "sys_exit_openat")?;
    Ok(TracepointFields {
        exec_filename: field(&exec, "sched_process_exec", "filename")?,
        exit_group_dead: field(&exit, "sched_process_exit", "group_dead").unwrap_or(ABSENT),
        sys_nr: field(&enter, "sys_enter_openat", "__syscall_nr")?,
        sys_args: field(&enter, "sys_enter_openat", "dfd")?,
        sys_ret: field(&sys_exit, "sys_exit_openat", "ret")?,
        _pad: 0,
    })
}

/// The complete CONFIG for the running kernel.
pub fn config(btf: &Path, tracefs: &Path, self_tgid: u32) -> Result<Config, LayoutError> {
    Ok(Config {
        off: offsets_from_btf(btf)?,
        tp: tracepoint_offsets(tracefs)?,
        self_tgid,
        select_comm: 0,
        select_exe: 0,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_6_18: &str = "name: sched_process_exit
ID: 367
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

    #[test]
    fn parses_tracepoint_formats() {
        let f = parse_format(EXIT_6_18);
        assert_eq!(field(&f, "x", "comm").unwrap(), 8);
        assert_eq!(field(&f, "x", "group_dead").unwrap(), 32);
        assert_eq!(field(&f, "x", "common_pid").unwrap(), 4);
        assert!(matches!(
            field(&f, "x", "nope"),
            Err(LayoutError::NoTracepointField { .. })
        ));
        let exec = parse_format("\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;");
        assert_eq!(exec, vec![("filename".to_string(), 8)]);
    }

    #[test]
    fn a_missing_btf_file_is_a_clear_error() {
        let err = offsets_from_btf(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    /// Reads this machine's BTF when it has one (no root needed: the file is world-readable).
    #[test]
    fn resolves_offsets_from_this_kernels_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: this machine has no {}", path.display());
            return;
        }
        let o = offsets_from_btf(path).expect("this kernel's BTF has every field we read");
        assert_ne!(o.task_tgid, 0);
        assert_ne!(o.task_real_parent, o.task_tgid);
        assert_eq!(
            o.dentry_d_name_len,
            o.dentry_d_name_name - 4,
            "qstr: len then name pointer"
        );
    }
}
