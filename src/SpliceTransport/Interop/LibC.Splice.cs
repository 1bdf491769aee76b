using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

internal static unsafe partial class LibC
{
    /// <summary>Move pages instead of copying where the kernel can (a hint).</summary>
    public const uint SPLICE_F_MOVE = 1;
    /// <summary>Do not block on the pipe; the sockets involved are non-blocking on their own.</summary>
    public const uint SPLICE_F_NONBLOCK = 2;
    /// <summary>More data follows: the socket may hold back a partial segment.</summary>
    public const uint SPLICE_F_MORE = 4;

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint sendfile(SafeHandle outFd, SafeHandle inFd, long* offset, nuint count);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint splice(SafeHandle inFd, long* inOffset, SafeHandle outFd, long* outOffset, nuint length, uint flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint tee(SafeHandle inFd, SafeHandle outFd, nuint length, uint flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int pipe2(int* fds, int flags);
}
