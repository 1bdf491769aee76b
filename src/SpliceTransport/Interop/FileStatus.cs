namespace SpliceTransport.Interop;

/// <summary>
/// The type and size of a file, its device, and what tells one version of it from another (the inode, and
/// the times of its last change of content and of status), as statx reports them.
/// </summary>
internal readonly record struct FileStatus(int Mode, long Size, uint DeviceMajor, uint DeviceMinor, ulong Inode, long Modified, uint ModifiedNanoseconds, long Changed, uint ChangedNanoseconds)
{
    public bool IsRegularFile => (Mode & LibC.S_IFMT) == LibC.S_IFREG;

    /// <summary>
    /// Major 0 is the kernel's anonymous devices: every pseudo file system (proc, sysfs, …), but also
    /// tmpfs and overlayfs. A file on a real block device is never a pseudo file.
    /// </summary>
    public bool IsOnAnonymousDevice => DeviceMajor == 0;

    /// <summary>
    /// True when both describe the same file with the same content: same device and inode (not replaced,
    /// say by a rename), same size, and neither its content nor its status changed since (mtime, ctime).
    /// </summary>
    public bool IsSameVersionAs(in FileStatus other) =>
        DeviceMajor == other.DeviceMajor && DeviceMinor == other.DeviceMinor && Inode == other.Inode && Size == other.Size
        && Modified == other.Modified && ModifiedNanoseconds == other.ModifiedNanoseconds
        && Changed == other.Changed && ChangedNanoseconds == other.ChangedNanoseconds;
}
