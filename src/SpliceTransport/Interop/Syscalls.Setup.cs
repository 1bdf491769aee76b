using System.Net;
using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

/// <summary>
/// The calls that set things up rather than move bytes: each loop's epoll instance and wake-up eventfd, listening
/// sockets, and the opening and checking of the files served and saved. They go through the seam like the data path,
/// for the same two reasons: EINTR is retried in one place (<see cref="Run{TCall}"/>), and a test can fail any of them.
/// </summary>
internal unsafe partial class Syscalls
{
    /// <summary>epoll_create1, close-on-exec: the descriptor number is the count.</summary>
    public virtual SyscallResult CreateEpoll() => Run(new EpollCreateCall());

    /// <summary>eventfd, non-blocking and close-on-exec, starting at 0: the descriptor number is the count.</summary>
    public virtual SyscallResult CreateWakeEvent() => Run(new EventFdCall());

    /// <summary>
    /// Adds 1 to a wake-up eventfd (write(2) of 8 bytes). Its own call rather than <see cref="WriteFile"/>, so that a
    /// test failing file writes never swallows a loop's wake-up.
    /// </summary>
    public virtual SyscallResult SignalWakeEvent(SafeHandle wakeEvent) => Run(new WakeEventCall(wakeEvent, reset: false));

    /// <summary>Resets a wake-up eventfd to 0 (read(2) of its 8-byte counter).</summary>
    public virtual SyscallResult ResetWakeEvent(SafeHandle wakeEvent) => Run(new WakeEventCall(wakeEvent, reset: true));

    /// <summary>epoll_ctl: adds, modifies or deletes <paramref name="fd"/> in <paramref name="epoll"/>.</summary>
    public virtual SyscallResult ControlEpoll(SafeHandle epoll, int operation, int fd, uint events, ulong data) =>
        Run(new EpollControlCall(epoll, operation, fd, events, data));

    /// <summary>epoll_wait into <paramref name="events"/> (<see cref="LibC.EpollEventSize"/> bytes an entry): the number of entries.</summary>
    public virtual SyscallResult WaitForEvents(SafeHandle epoll, byte* events, int maxEvents, int timeoutMilliseconds) =>
        Run(new EpollWaitCall(epoll, events, maxEvents, timeoutMilliseconds));

    /// <summary>Entry <paramref name="index"/> of what <see cref="WaitForEvents"/> filled in: the events and the registered data.</summary>
    public static void ReadEpollEvent(byte* events, int index, out uint flags, out ulong data) =>
        LibC.ReadEpollEvent(events, index, out flags, out data);

    /// <summary>getrlimit(RLIMIT_NOFILE): the soft descriptor limit is the count (<see cref="int.MaxValue"/> when unlimited).</summary>
    public virtual SyscallResult DescriptorLimit() => Run(new DescriptorLimitCall());

    /// <summary>
    /// A new TCP or Unix stream socket for <paramref name="endPoint"/>'s family: non-blocking (the loops never block
    /// on it) and close-on-exec. The descriptor number is the count.
    /// </summary>
    public virtual SyscallResult OpenStreamSocket(EndPoint endPoint) => Run(new SocketCall(SocketAddresses.NativeFamily(endPoint.AddressFamily)));

    /// <summary>bind(2) to <paramref name="endPoint"/>'s sockaddr.</summary>
    public virtual SyscallResult Bind(SafeHandle socket, EndPoint endPoint)
    {
        SocketAddress address = endPoint.Serialize();
        fixed (byte* bytes = address.Buffer.Span)
        {
            return Run(new BindCall(socket, bytes, address.Size));
        }
    }

    /// <summary>listen(2) with <paramref name="backlog"/>.</summary>
    public virtual SyscallResult Listen(SafeHandle socket, int backlog) => Run(new ListenCall(socket, backlog));

    /// <summary>getsockopt of an integer option: its value is the count.</summary>
    public virtual SyscallResult GetOption(SafeHandle socket, int level, int name) => Run(new GetOptionCall(socket, level, name));

    /// <summary>fcntl F_GETFL: the file status flags are the count.</summary>
    public virtual SyscallResult GetStatusFlags(SafeHandle fd) => Run(new FcntlCall(fd, LibC.F_GETFL, 0));

    /// <summary>fcntl F_SETFL.</summary>
    public virtual SyscallResult SetStatusFlags(SafeHandle fd, int flags) => Run(new FcntlCall(fd, LibC.F_SETFL, flags));

    /// <summary>open(2) of <paramref name="path"/> with <paramref name="flags"/>: the descriptor number is the count.</summary>
    public virtual SyscallResult Open(string path, int flags) => Run(new OpenCall(path, flags));

    /// <summary>statx of <paramref name="path"/>, following symbolic links as open does.</summary>
    public virtual SyscallResult Stat(string path, out FileStatus status)
    {
        FileStatus read = default;
        SyscallResult result = Run(new StatPathCall(path, &read));
        status = read;
        return result;
    }

    /// <summary>statx of an open descriptor: the race-free check of what was opened.</summary>
    public virtual SyscallResult Stat(SafeHandle file, out FileStatus status)
    {
        FileStatus read = default;
        SyscallResult result = Run(new StatDescriptorCall(file, &read));
        status = read;
        return result;
    }

    /// <summary>fstatfs: the file system's magic number (f_type) is the count.</summary>
    public virtual SyscallResult FileSystemType(SafeHandle file) => Run(new FileSystemTypeCall(file));

    /// <summary>fsync(2): the file's (or folder's) data and metadata reach the disk.</summary>
    public virtual SyscallResult Sync(SafeHandle file) => Run(new SyncCall(file));

    private readonly struct EpollCreateCall : ICall
    {
        public nint Invoke() => LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
    }

    private readonly struct EventFdCall : ICall
    {
        public nint Invoke() => LibC.eventfd(0, LibC.EFD_NONBLOCK | LibC.EFD_CLOEXEC);
    }

    private readonly struct WakeEventCall(SafeHandle wakeEvent, bool reset) : ICall
    {
        public nint Invoke()
        {
            ulong counter = 1;
            return reset ? LibC.read(wakeEvent, (byte*)&counter, sizeof(ulong)) : LibC.write(wakeEvent, (byte*)&counter, sizeof(ulong));
        }
    }

    private readonly struct EpollControlCall(SafeHandle epoll, int operation, int fd, uint events, ulong data) : ICall
    {
        public nint Invoke() => LibC.epoll_ctl(epoll, operation, fd, events, data);
    }

    private readonly struct EpollWaitCall(SafeHandle epoll, byte* events, int maxEvents, int timeout) : ICall
    {
        public nint Invoke() => LibC.epoll_wait(epoll, events, maxEvents, timeout);
    }

    private readonly struct DescriptorLimitCall : ICall
    {
        public nint Invoke() => LibC.DescriptorLimit(out long limit) == 0 ? (nint)limit : -1;
    }

    private readonly struct SocketCall(int family) : ICall
    {
        public nint Invoke() => LibC.socket(family, LibC.SOCK_STREAM | LibC.SOCK_NONBLOCK | LibC.SOCK_CLOEXEC, 0);
    }

    private readonly struct BindCall(SafeHandle socket, byte* address, int length) : ICall
    {
        public nint Invoke() => LibC.bind(socket, address, length);
    }

    private readonly struct ListenCall(SafeHandle socket, int backlog) : ICall
    {
        public nint Invoke() => LibC.listen(socket, backlog);
    }

    private readonly struct GetOptionCall(SafeHandle socket, int level, int name) : ICall
    {
        public nint Invoke()
        {
            int value = 0;
            int length = sizeof(int);
            return LibC.getsockopt(socket, level, name, &value, &length) == 0 ? value : -1;
        }
    }

    private readonly struct OpenCall(string path, int flags) : ICall
    {
        public nint Invoke() => LibC.open(path, flags);
    }

    private readonly struct StatPathCall(string path, FileStatus* status) : ICall
    {
        public nint Invoke() => LibC.StatPath(path, out *status);
    }

    private readonly struct StatDescriptorCall(SafeHandle file, FileStatus* status) : ICall
    {
        public nint Invoke() => LibC.StatDescriptor(file, out *status);
    }

    private readonly struct FileSystemTypeCall(SafeHandle file) : ICall
    {
        public nint Invoke() => LibC.FileSystemType(file, out long type) == 0 ? (nint)type : -1;
    }

    private readonly struct SyncCall(SafeHandle file) : ICall
    {
        public nint Invoke() => LibC.fsync(file);
    }
}
