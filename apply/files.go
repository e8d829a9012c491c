package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxFileSize bounds the files apply reads and records (configuration
// files are a few lines; anything larger is not one).
const maxFileSize = 1 << 20

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written, given mode (and uid:gid when uid >= 0), fsynced
// and renamed over path, then the directory is fsynced. A reader sees the
// old content or the new, never a mix, also after a crash.
func writeFileAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".ctdoctor-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// syncDir fsyncs a directory, making a rename, create or unlink in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// osMode turns stat bits into an os.FileMode with setuid/setgid/sticky.
func osMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// readFileState records a file: its bytes, mode and owner, or its absence.
func readFileState(path string) (*Prev, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return &Prev{Absent: true}, nil
		}
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, _ := os.Readlink(path)
			return nil, fmt.Errorf("%s is a symbolic link (to %s): a plan must name the file itself", path, target)
		}
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size > maxFileSize {
		return nil, fmt.Errorf("%s is %d bytes: larger than a configuration file (limit %d)", path, st.Size, maxFileSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s grew past %d bytes while being read", path, maxFileSize)
	}
	if b == nil {
		b = []byte{}
	}
	return &Prev{Content: b, Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// sameFile reports whether a file's recorded state equals another.
func sameFile(a, b *Prev) bool {
	if a.Absent || b.Absent {
		return a.Absent == b.Absent
	}
	return bytes.Equal(a.Content, b.Content) && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID
}

// describeFile is a short description of a file state for messages.
func describeFile(p *Prev) string {
	if p.Absent {
		return "absent"
	}
	lines := strings.Count(string(p.Content), "\n")
	if len(p.Content) > 0 && !strings.HasSuffix(string(p.Content), "\n") {
		lines++
	}
	return fmt.Sprintf("%d bytes, %d lines, mode %04o, owner %d:%d", len(p.Content), lines, p.Mode, p.UID, p.GID)
}

// checkNoSymlinks refuses a path under a fake root with a symbolic link in
// any component: a link to /etc/… would lead out of the root and onto the
// real host. On the live root only the file itself is checked (by
// readFileState).
func checkNoSymlinks(root, rel string) error {
	if root == "/" {
		return nil
	}
	p := root
	for _, c := range strings.Split(strings.Trim(rel, "/"), "/") {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link inside the root %s: refused (it could lead out of the root)", p, root)
		}
	}
	return nil
}

// removeFile unlinks path (absent is fine) and fsyncs its directory.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}
