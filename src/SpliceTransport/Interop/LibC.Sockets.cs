using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

internal static unsafe partial class LibC
{
    public const int AF_UNIX = 1;
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;

    public const int SOCK_STREAM = 1;
    /// <summary>Equal to O_NONBLOCK: the socket never blocks the loop thread.</summary>
    public const int SOCK_NONBLOCK = 0x800;
    /// <summary>Equal to O_CLOEXEC: a child process started by the app must not inherit client sockets.</summary>
    public const int SOCK_CLOEXEC = 0x80000;

    public const int SOL_SOCKET = 1;
    public const int SO_REUSEADDR = 2;
    public const int SO_TYPE = 3;
    public const int SO_ERROR = 4;
    public const int SO_LINGER = 13;
    public const int SO_REUSEPORT = 15;
    public const int SO_ACCEPTCONN = 30;
    public const int SO_DOMAIN = 39;

    public const int IPPROTO_TCP = 6;
    public const int TCP_NODELAY = 1;
    public const int TCP_CORK = 3;

    public const int IPPROTO_IPV6 = 41;
    public const int IPV6_V6ONLY = 26;

    public const int SHUT_RD = 0;
    public const int SHUT_WR = 1;
    public const int SHUT_RDWR = 2;

    /// <summary>A send to a peer that has gone returns EPIPE instead of raising SIGPIPE.</summary>
    public const int MSG_NOSIGNAL = 0x4000;
    /// <summary>More data follows at once: the kernel holds a partial segment back instead of sending it alone.</summary>
    public const int MSG_MORE = 0x8000;

    /// <summary>struct linger: with OnOff set and Seconds 0, close(2) resets the connection.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Linger
    {
        public int OnOff;
        public int Seconds;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IOVector
    {
        public byte* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr on 64-bit Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MessageHeader
    {
        public void* Name;
        public int NameLength;
        public IOVector* IOVectors;
        public nuint IOVectorCount;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [LibraryImport(Library, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int bind(SafeHandle fd, byte* address, int addressLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int connect(SafeHandle fd, byte* address, int addressLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int listen(SafeHandle fd, int backlog);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int accept4(SafeHandle fd, byte* address, int* addressLength, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int setsockopt(SafeHandle fd, int level, int name, int* value, int valueLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int getsockopt(SafeHandle fd, int level, int name, int* value, int* valueLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int getsockname(SafeHandle fd, byte* address, int* addressLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int getpeername(SafeHandle fd, byte* address, int* addressLength);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int shutdown(SafeHandle fd, int how);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint recv(SafeHandle fd, byte* buffer, nuint length, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint send(SafeHandle fd, byte* buffer, nuint length, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint sendmsg(SafeHandle fd, MessageHeader* message, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint readv(SafeHandle fd, IOVector* vectors, int count);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint writev(SafeHandle fd, IOVector* vectors, int count);
}
