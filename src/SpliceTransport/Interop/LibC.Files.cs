using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

internal static unsafe partial class LibC
{
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    /// <summary>Every write goes to the end of the file. splice(2) refuses such a destination with EINVAL.</summary>
    public const int O_APPEND = 0x400;
    /// <summary>Opening a FIFO for reading must not wait for a writer; on a regular file it changes nothing.</summary>
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;
    /// <summary>Fails with ENOTDIR unless the path is a folder: a folder is opened only to fsync its entries.</summary>
    public const int O_DIRECTORY = 0x10000;

    public const int F_GETFL = 3;
    public const int F_SETFL = 4;
    /// <summary>
    /// Sets a pipe's capacity (Linux 2.6.35): the default of 16 pages makes a 1 MiB move take 16 splice calls
    /// each way; a larger pipe takes it in one.
    /// </summary>
    public const int F_SETPIPE_SZ = 1031;
    /// <summary>A pipe's capacity in bytes: what F_SETPIPE_SZ set, or the default a new pipe got.</summary>
    public const int F_GETPIPE_SZ = 1032;

    public const int AT_FDCWD = -100;
    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_TYPE = 0x1;
    public const uint STATX_SIZE = 0x200;
    public const uint STATX_MTIME = 0x40;
    public const uint STATX_CTIME = 0x80;
    public const uint STATX_INO = 0x100;

    /// <summary>What the transport asks of statx: the type and size, and what tells one version of a file from another.</summary>
    private const uint StatxMask = STATX_TYPE | STATX_SIZE | STATX_INO | STATX_MTIME | STATX_CTIME;
    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;

    /// <summary>
    /// struct statx is 256 bytes with the same layout on every architecture, which is why the transport uses
    /// statx rather than fstat, whose struct stat differs between x86-64 and arm64.
    /// </summary>
    private const int StatxSize = 256;
    private const int StatxModeOffset = 28;
    private const int StatxSizeOffset = 40;
    private const int StatxDeviceMajorOffset = 136;
    private const int StatxDeviceMinorOffset = 140;
    private const int StatxInodeOffset = 32;
    private const int StatxChangedOffset = 96;
    private const int StatxModifiedOffset = 112;

    /// <summary>A struct statx_timestamp: tv_sec (8 bytes), then tv_nsec (4).</summary>
    private const int StatxNanosecondsOffset = 8;

    [LibraryImport(Library, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    /// <summary>Waits until the file's data and metadata (for a folder: its entries) are on the storage device.</summary>
    [LibraryImport(Library, SetLastError = true)]
    public static partial int fsync(SafeHandle fd);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint pread(SafeHandle fd, byte* buffer, nuint count, long offset);

    /// <summary>
    /// preadv2's flag (Linux 4.14) that makes a buffered read fail with EAGAIN rather than wait for a page that
    /// is not yet read from disk, or start any disk read. It tells a page that is in the cache and readable from
    /// one that readahead has only inserted (locked, still being read), which cachestat(2) counts as cached.
    /// </summary>
    public const int RWF_NOWAIT = 0x8;

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint preadv2(SafeHandle fd, IOVector* vectors, int count, long offset, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint pwrite(SafeHandle fd, byte* buffer, nuint count, long offset);

    /// <summary>
    /// fallocate(2) mode: reserve the blocks without changing the file's size, so a reader sees only what was
    /// written, and a file abandoned half-way shows no tail of zeros.
    /// </summary>
    public const int FALLOC_FL_KEEP_SIZE = 0x1;

    [LibraryImport(Library, SetLastError = true)]
    public static partial int fallocate(SafeHandle fd, int mode, long offset, long length);

    [LibraryImport(Library, SetLastError = true)]
    private static partial int fstatfs(SafeHandle fd, byte* buffer);

    /// <summary>
    /// cachestat(2)'s number (Linux 6.5), the same on x86-64 and arm64: both take it from the kernel's generic
    /// syscall table. glibc has no wrapper for it, so it is reached through syscall(2).
    /// </summary>
    public const long SYS_cachestat = 451;

    /// <summary>struct cachestat_range: the byte range to ask about (a length of 0 means "to the end of the file").</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CacheStatRange
    {
        public ulong Offset;
        public ulong Length;
    }

    /// <summary>struct cachestat: page counts over the range. Only <see cref="Cached"/> is read.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CacheStat
    {
        public ulong Cached;
        public ulong Dirty;
        public ulong Writeback;
        public ulong Evicted;
        public ulong RecentlyEvicted;
    }

    /// <summary>syscall(2) for cachestat: fd, range, result, flags (0; none are defined).</summary>
    [LibraryImport(Library, SetLastError = true, EntryPoint = "syscall")]
    public static partial nint syscall_cachestat(long number, SafeHandle fd, CacheStatRange* range, CacheStat* stat, nuint flags);

    /// <summary>struct statfs is 120 bytes on 64-bit Linux; f_type, the only field read, is its first.</summary>
    private const int StatfsSize = 120;

    /// <summary>getrlimit's resource number for the descriptor limit.</summary>
    private const int RLIMIT_NOFILE = 7;

    [LibraryImport(Library, SetLastError = true)]
    private static partial int getrlimit(int resource, ulong* limits);

    /// <summary>
    /// The process's soft descriptor limit (RLIMIT_NOFILE; .NET raises it to the hard limit at start-up), or
    /// <see cref="int.MaxValue"/> when it cannot be read or is unlimited; 0 or -1 with errno set.
    /// </summary>
    public static int DescriptorLimit(out long limit)
    {
        ulong* limits = stackalloc ulong[2]; // struct rlimit: rlim_cur, rlim_max.
        int result = getrlimit(RLIMIT_NOFILE, limits);
        limit = result == 0 && limits[0] < int.MaxValue ? (long)limits[0] : int.MaxValue;
        return result;
    }

    /// <summary>The filesystem magic number (statfs f_type) of an open descriptor; 0 or -1 with errno set.</summary>
    public static int FileSystemType(SafeHandle fd, out long type)
    {
        byte* buffer = stackalloc byte[StatfsSize];
        int result = fstatfs(fd, buffer);
        type = result == 0 ? *(long*)buffer : 0;
        return result;
    }

    [LibraryImport(Library, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(Library, SetLastError = true, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx_fd(SafeHandle dirfd, string path, int flags, uint mask, byte* buffer);

    /// <summary>statx on a path (following symbolic links, as open does); 0 or -1 with errno set.</summary>
    public static int StatPath(string path, out FileStatus status)
    {
        byte* buffer = stackalloc byte[StatxSize];
        int result = statx(AT_FDCWD, path, 0, StatxMask, buffer);
        status = result == 0 ? ReadStatus(buffer) : default;
        return result;
    }

    /// <summary>statx on an open descriptor (AT_EMPTY_PATH), the race-free check after open; 0 or -1 with errno set.</summary>
    public static int StatDescriptor(SafeHandle fd, out FileStatus status)
    {
        byte* buffer = stackalloc byte[StatxSize];
        int result = statx_fd(fd, string.Empty, AT_EMPTY_PATH, StatxMask, buffer);
        status = result == 0 ? ReadStatus(buffer) : default;
        return result;
    }

    private static FileStatus ReadStatus(byte* buffer) => new(
        *(ushort*)(buffer + StatxModeOffset),
        *(long*)(buffer + StatxSizeOffset),
        *(uint*)(buffer + StatxDeviceMajorOffset),
        *(uint*)(buffer + StatxDeviceMinorOffset),
        *(ulong*)(buffer + StatxInodeOffset),
        *(long*)(buffer + StatxModifiedOffset),
        *(uint*)(buffer + StatxModifiedOffset + StatxNanosecondsOffset),
        *(long*)(buffer + StatxChangedOffset),
        *(uint*)(buffer + StatxChangedOffset + StatxNanosecondsOffset));
}
