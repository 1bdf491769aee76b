using SpliceTransport.Interop;
using SpliceTransport.Http;

namespace SpliceTransport.Files;

/// <summary>
/// Opens a file for a zero-copy send, with the checks and exception types of Kestrel's own
/// <c>SendFileAsync</c> fallback (FileNotFoundException, UnauthorizedAccessException,
/// ArgumentOutOfRangeException for offset and count), so an app sees the same errors on either path,
/// always before any header is sent.
/// </summary>
internal static class FileOpener
{
    private const int S_IFDIR = 0x4000;

    /// <summary>
    /// Pseudo file systems whose files report a size that has nothing to do with their content
    /// (statfs f_type values from linux/magic.h): proc, sysfs, debugfs, tracefs, cgroup, cgroup2,
    /// securityfs, configfs, efivarfs, pstore, bpf.
    /// </summary>
    private static readonly long[] s_pseudoFileSystems =
    [
        0x9fa0, 0x62656572, 0x64626720, 0x74726163, 0x27e0eb, 0x63677270,
        0x73636673, 0x62656570, 0xde5e81e4, 0x6165676c, 0xcafe4a11,
    ];

    /// <summary>
    /// Checks <paramref name="path"/> and the requested range. Returns a reference to an open descriptor of it (from
    /// <paramref name="cache"/>, or opened now) and the byte count to send, or null with a fallback reason when the
    /// file cannot go zero-copy. The caller releases the reference once the send is done.
    /// </summary>
    public static CachedFile? Open(Syscalls syscalls, OpenFileCache cache, string path, long offset, long? count, out long length, out string? fallbackReason)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        fallbackReason = null;
        length = 0;

        // The type comes from the path before anything is opened: opening a FIFO, even briefly and
        // non-blocking, pairs with a writer waiting in open(2), which then fails with EPIPE once we close it.
        // The same statx tells the cache whether its descriptor is still the file at this path.
        SyscallResult stat = syscalls.Stat(path, out FileStatus status);
        if (!stat.IsSuccess)
        {
            throw ErrnoExceptions.ForFile(path, stat.Errno, "statx");
        }
        if ((status.Mode & LibC.S_IFMT) == S_IFDIR)
        {
            throw new FileNotFoundException($"Could not find file '{path}': it is a directory.", path);
        }
        CheckRange(path, offset, count, status.Size);
        if (!status.IsRegularFile)
        {
            fallbackReason = FallbackReasons.NotRegularFile;
            return null;
        }

        CachedFile? file = cache.Acquire(path, status, s_openDescriptor, syscalls, out fallbackReason);
        if (file is null)
        {
            return null;
        }
        try
        {
            // The descriptor's own size: the path may have been replaced since the statx above.
            CheckRange(path, offset, count, file.Status.Size);
            length = count ?? file.Status.Size - offset;
            return file;
        }
        catch
        {
            file.Release();
            throw;
        }
    }

    private static readonly Func<string, Syscalls, (FileDescriptorHandle?, FileStatus, string?)> s_openDescriptor = OpenDescriptor;

    /// <summary>
    /// open(2), then the checks on the descriptor itself (the path may have been replaced since it was looked at):
    /// a regular file, not on a pseudo file system; made blocking. Returns the descriptor and its status, or no
    /// descriptor and the fallback reason.
    /// </summary>
    private static (FileDescriptorHandle? File, FileStatus Status, string? Reason) OpenDescriptor(string path, Syscalls syscalls)
    {
        SyscallResult opening = syscalls.Open(path, LibC.O_RDONLY | LibC.O_CLOEXEC | LibC.O_NONBLOCK);
        if (!opening.IsSuccess)
        {
            throw ErrnoExceptions.ForFile(path, opening.Errno, "open");
        }
        var file = new FileDescriptorHandle((int)opening.Count);
        try
        {
            syscalls.Stat(file, out FileStatus opened).CountOrThrow("statx", path);
            string? reason = !opened.IsRegularFile ? FallbackReasons.NotRegularFile
                : opened.IsOnAnonymousDevice && IsPseudoFileSystem(syscalls, file, path) ? FallbackReasons.PseudoFile
                : null;
            if (reason is not null)
            {
                file.Dispose();
                return (null, opened, reason);
            }
            MakeBlocking(syscalls, file, path);
            return (file, opened, null);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Clears the O_NONBLOCK the open needed (so that a FIFO swapped in for the file could not block it). On a
    /// non-blocking file, sendfile may say EAGAIN for pages not in the page cache, which the send pump would
    /// take for a full socket and wait for an edge that never comes; opened blocking, EAGAIN can only be the
    /// socket's.
    /// </summary>
    private static void MakeBlocking(Syscalls syscalls, FileDescriptorHandle file, string path)
    {
        // The file status flags are exactly the O_NONBLOCK of the open (F_SETFL ignores the access mode, and
        // O_CLOEXEC is a descriptor flag): 0 leaves it read-only and blocking, in one call.
        syscalls.SetStatusFlags(file, 0).CountOrThrow("fcntl", path);
    }

    private static bool IsPseudoFileSystem(Syscalls syscalls, FileDescriptorHandle file, string path)
    {
        return Array.IndexOf(s_pseudoFileSystems, syscalls.FileSystemType(file).CountOrThrow("fstatfs", path)) >= 0;
    }

    private static void CheckRange(string path, long offset, long? count, long size)
    {
        if (offset < 0 || offset > size)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"The offset must be within the file '{path}' of {size} bytes.");
        }
        if (count is { } value && (value < 0 || value > size - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"The count must fit the file '{path}' of {size} bytes from offset {offset}.");
        }
    }
}
