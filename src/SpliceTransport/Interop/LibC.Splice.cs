using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

internal static unsafe partial class LibC
{
    /// <summary>
    /// Asks the kernel to move pages instead of copying them. Only a hint, and a no-op since Linux 2.6.21
    /// removed page stealing; the transport does not pass it, so that no one counts on it.
    /// </summary>
    public const uint SPLICE_F_MOVE = 1;
    /// <summary>
    /// The call does not block on the pipe: a full pipe (splicing in) or an empty one (splicing out) says
    /// EAGAIN. Whether the other descriptor blocks is its own O_NONBLOCK; the transport's are all non-blocking.
    /// </summary>
    public const uint SPLICE_F_NONBLOCK = 2;
    /// <summary>
    /// More data follows: a socket destination may hold back a partial segment, as with MSG_MORE. Never set
    /// by default: when nothing follows, the segment waits for TCP's 200 ms cork timer (Go issue 10948).
    /// </summary>
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
