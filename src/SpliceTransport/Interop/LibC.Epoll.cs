using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

internal static unsafe partial class LibC
{
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const int EPOLL_CTL_MOD = 3;

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLET = 1u << 31;

    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;

    /// <summary>
    /// struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16 bytes), so it is
    /// read and written through this stride rather than a single managed struct.
    /// </summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    /// <summary>Offset of epoll_data within struct epoll_event, for the same reason.</summary>
    private static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    [LibraryImport(Library, SetLastError = true)]
    public static partial int epoll_create1(int flags);

    [LibraryImport(Library, SetLastError = true, EntryPoint = "epoll_ctl")]
    private static partial int epoll_ctl_raw(SafeHandle epfd, int op, int fd, byte* epollEvent);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int epoll_wait(SafeHandle epfd, byte* events, int maxEvents, int timeoutMilliseconds);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int eventfd(uint initialValue, int flags);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint read(SafeHandle fd, byte* buffer, nuint count);

    [LibraryImport(Library, SetLastError = true)]
    public static partial nint write(SafeHandle fd, byte* buffer, nuint count);

    /// <summary>epoll_ctl with the event laid out for this architecture; returns 0 or -1 with errno set.</summary>
    public static int epoll_ctl(SafeHandle epfd, int op, int fd, uint events, ulong data)
    {
        byte* epollEvent = stackalloc byte[16];
        *(uint*)epollEvent = events;
        *(ulong*)(epollEvent + EpollDataOffset) = data;
        return epoll_ctl_raw(epfd, op, fd, epollEvent);
    }

    /// <summary>Reads the events and data of entry <paramref name="index"/> of an epoll_wait result buffer.</summary>
    public static void ReadEpollEvent(byte* events, int index, out uint flags, out ulong data)
    {
        byte* entry = events + index * EpollEventSize;
        flags = *(uint*)entry;
        data = *(ulong*)(entry + EpollDataOffset);
    }
}
