using System.Net;
using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

/// <summary>
/// Every system call the transport makes outside <c>Interop/</c>: here those of the data path (accept, receive, send,
/// sendfile, pread, shutdown, socket options, and the pipe, splice and tee calls of <c>Splice/</c>), in
/// <c>Syscalls.Setup.cs</c> those that set things up (epoll, listening sockets, opening files). Each returns a
/// <see cref="SyscallResult"/>. EINTR is retried here, in <see cref="Run{TCall}"/>, and nowhere else; EAGAIN is
/// returned as <see cref="SyscallResult.WouldBlock"/> for the caller to wait on readiness.
///
/// Every member is virtual: this class is the fault-injection seam. Tests replace the registered instance
/// with a subclass that returns EAGAIN storms, short counts, EINTR or resets, and check that each ends in the
/// right state. <see cref="Default"/> is what production uses; a virtual call costs nothing next to a syscall.
/// </summary>
internal unsafe partial class Syscalls
{
    public static readonly Syscalls Default = new();

    /// <summary>accept4: a new non-blocking, close-on-exec descriptor, or the errno.</summary>
    public virtual SyscallResult Accept(SafeHandle listener, byte* address, int* addressLength) =>
        Run(new AcceptCall(listener, address, addressLength));

    /// <summary>recv into <paramref name="buffer"/>: 0 is the peer's FIN.</summary>
    public virtual SyscallResult Receive(SafeHandle socket, Span<byte> buffer)
    {
        fixed (byte* bytes = buffer)
        {
            return Run(new ReceiveCall(socket, bytes, (nuint)buffer.Length));
        }
    }

    /// <summary>sendmsg over <paramref name="count"/> vectors, never raising SIGPIPE.</summary>
    public virtual SyscallResult SendMessage(SafeHandle socket, LibC.IOVector* vectors, int count, int flags)
    {
        LibC.MessageHeader message = default;
        message.IOVectors = vectors;
        message.IOVectorCount = (nuint)count;
        return Run(new SendMessageCall(socket, &message, flags | LibC.MSG_NOSIGNAL));
    }

    /// <summary>sendfile from <paramref name="offset"/> of <paramref name="file"/> (the file's own offset is not moved).</summary>
    public virtual SyscallResult SendFile(SafeHandle socket, SafeHandle file, long offset, long count) =>
        // sendfile advances this copy of the offset; the caller moves its own by the returned count.
        Run(new SendFileCall(socket, file, offset, (nuint)count));

    /// <summary>pread into <paramref name="buffer"/> from <paramref name="offset"/>: 0 is the end of the file.</summary>
    public virtual SyscallResult ReadFile(SafeHandle file, Span<byte> buffer, long offset)
    {
        fixed (byte* bytes = buffer)
        {
            return Run(new ReadFileCall(file, bytes, (nuint)buffer.Length, offset));
        }
    }

    /// <summary>
    /// preadv2 with RWF_NOWAIT into <paramref name="buffer"/> from <paramref name="offset"/>: EAGAIN when a page
    /// the read needs is not readable from the page cache yet, without waiting or starting a disk read.
    /// EOPNOTSUPP on file systems that cannot read without waiting.
    /// </summary>
    public virtual SyscallResult ReadFileIfCached(SafeHandle file, Span<byte> buffer, long offset)
    {
        fixed (byte* bytes = buffer)
        {
            return Run(new ReadFileIfCachedCall(file, bytes, (nuint)buffer.Length, offset));
        }
    }

    /// <summary>
    /// cachestat(2): how many pages of the range from <paramref name="offset"/>, <paramref name="length"/> bytes
    /// long, are in the page cache (the count). ENOSYS before Linux 6.5.
    /// </summary>
    public virtual SyscallResult CachedPages(SafeHandle file, long offset, long length) =>
        Run(new CacheStatCall(file, offset, length));

    /// <summary>shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR.</summary>
    public virtual SyscallResult Shutdown(SafeHandle socket, int how) => Run(new ShutdownCall(socket, how));

    /// <summary>setsockopt with an integer value.</summary>
    public virtual SyscallResult SetOption(SafeHandle socket, int level, int name, int value) =>
        Run(new SetOptionCall(socket, level, name, value));

    /// <summary>
    /// SO_LINGER with a zero timeout: the close that follows resets the connection (RST) instead of sending a
    /// FIN, and drops what was unsent. This is how an aborted connection ends, as on Kestrel's socket transport.
    /// </summary>
    public virtual SyscallResult SetResetOnClose(SafeHandle socket)
    {
        LibC.Linger linger = new() { OnOff = 1, Seconds = 0 };
        return Run(new SetLingerCall(socket, &linger));
    }

    /// <summary>
    /// pipe2 with O_CLOEXEC | O_NONBLOCK: both ends of a new pipe, or the errno (EMFILE: this process is out of
    /// descriptors; ENFILE: the system is, or an unprivileged user is past /proc/sys/fs/pipe-user-pages-hard).
    /// On success the caller owns both handles.
    /// </summary>
    public virtual SyscallResult CreatePipe(out FileDescriptorHandle? readEnd, out FileDescriptorHandle? writeEnd)
    {
        int* fds = stackalloc int[2];
        SyscallResult result = Run(new CreatePipeCall(fds));
        if (!result.IsSuccess)
        {
            readEnd = null;
            writeEnd = null;
            return result;
        }
        // Wrapped at once, before anything else can fail, so neither number can leak.
        readEnd = new FileDescriptorHandle(fds[0]);
        writeEnd = new FileDescriptorHandle(fds[1]);
        return result;
    }

    /// <summary>
    /// fcntl(F_SETPIPE_SZ): asks for a pipe of <paramref name="size"/> bytes; the count is the size the kernel
    /// set (rounded up to a power-of-two number of pages). EPERM: above /proc/sys/fs/pipe-max-size without
    /// CAP_SYS_RESOURCE, or an unprivileged user past /proc/sys/fs/pipe-user-pages-soft; EBUSY: smaller than
    /// what the pipe holds.
    /// </summary>
    public virtual SyscallResult SetPipeSize(SafeHandle pipe, int size) => Run(new FcntlCall(pipe, LibC.F_SETPIPE_SZ, size));

    /// <summary>fcntl(F_GETPIPE_SZ): the capacity of the pipe in bytes.</summary>
    public virtual SyscallResult GetPipeSize(SafeHandle pipe) => Run(new FcntlCall(pipe, LibC.F_GETPIPE_SZ, 0));

    /// <summary>
    /// splice(2): moves up to <paramref name="length"/> bytes between a pipe and another descriptor (one side
    /// must be a pipe). An offset is for a file side only (a socket or a pipe given one says EINVAL): the kernel advances a
    /// copy of it and the caller moves its own by the count, as with <see cref="SendFile"/>; null uses and moves
    /// the file's own position. 0 is the end of the input.
    /// </summary>
    public virtual SyscallResult Splice(SafeHandle input, long? inputOffset, SafeHandle output, long? outputOffset, nuint length, uint flags) =>
        Run(new SpliceCall(input, inputOffset, output, outputOffset, length, flags));

    /// <summary>
    /// fallocate(2) with FALLOC_FL_KEEP_SIZE: reserves the blocks for <paramref name="length"/> bytes from
    /// <paramref name="offset"/>, the file's size unchanged. ENOSPC or EDQUOT: the disk cannot hold them (said now,
    /// not after they arrived); EOPNOTSUPP: the file system cannot reserve (nothing is lost: writes allocate as ever).
    /// </summary>
    public virtual SyscallResult Preallocate(SafeHandle file, long offset, long length) =>
        Run(new PreallocateCall(file, offset, length));

    /// <summary>tee(2): copies up to <paramref name="length"/> bytes from one pipe into another without consuming them.</summary>
    public virtual SyscallResult Tee(SafeHandle input, SafeHandle output, nuint length, uint flags) =>
        Run(new TeeCall(input, output, length, flags));

    /// <summary>read(2) into <paramref name="buffer"/>, for descriptors that have no offset (a pipe): 0 is the end.</summary>
    public virtual SyscallResult Read(SafeHandle fd, Span<byte> buffer)
    {
        fixed (byte* bytes = buffer)
        {
            return Run(new ReadCall(fd, bytes, (nuint)buffer.Length));
        }
    }

    /// <summary>
    /// pwrite at <paramref name="offset"/> of <paramref name="file"/> (the file's own offset is not moved), or
    /// write(2) at the file's own position when it is null. The count may be short.
    /// </summary>
    public virtual SyscallResult WriteFile(SafeHandle file, ReadOnlySpan<byte> buffer, long? offset)
    {
        fixed (byte* bytes = buffer)
        {
            return Run(new WriteFileCall(file, bytes, (nuint)buffer.Length, offset));
        }
    }

    /// <summary>
    /// connect on a non-blocking socket: 0 when connected at once (a Unix socket, often), EINPROGRESS while the
    /// handshake goes on (wait for writability, then read <see cref="PendingError"/>). EINTR is retried like
    /// every call's, and the retry then says EALREADY, which means the same as EINPROGRESS.
    /// </summary>
    public virtual SyscallResult Connect(SafeHandle socket, SocketAddress address)
    {
        fixed (byte* bytes = address.Buffer.Span)
        {
            return Run(new ConnectCall(socket, bytes, address.Size));
        }
    }

    /// <summary>getsockopt(SO_ERROR): the socket's pending error, cleared by reading it (0: none), as the count.</summary>
    public virtual SyscallResult PendingError(SafeHandle socket) => Run(new PendingErrorCall(socket));

    /// <summary>
    /// Makes the call, again while it says EINTR (a signal arrived before it did anything: nothing happened,
    /// so the same call with the same arguments is correct). The one place that knows about EINTR.
    /// The call is a struct, so the JIT specializes this loop for each one: no delegate, no allocation.
    /// </summary>
    protected static SyscallResult Run<TCall>(TCall call) where TCall : struct, ICall
    {
        while (true)
        {
            nint result = call.Invoke();
            if (result >= 0)
            {
                return SyscallResult.Success(result);
            }
            int errno = LibC.LastErrno;
            if (errno != Errno.EINTR)
            {
                return SyscallResult.Failure(errno);
            }
        }
    }

    /// <summary>One system call with its arguments bound: returns the C result (-1 with errno set on failure).</summary>
    protected interface ICall
    {
        nint Invoke();
    }

    private readonly struct AcceptCall(SafeHandle fd, byte* address, int* length) : ICall
    {
        public nint Invoke() => LibC.accept4(fd, address, length, LibC.SOCK_NONBLOCK | LibC.SOCK_CLOEXEC);
    }

    private readonly struct ReceiveCall(SafeHandle fd, byte* buffer, nuint length) : ICall
    {
        public nint Invoke() => LibC.recv(fd, buffer, length, 0);
    }

    private readonly struct SendMessageCall(SafeHandle fd, LibC.MessageHeader* message, int flags) : ICall
    {
        public nint Invoke() => LibC.sendmsg(fd, message, flags);
    }

    private readonly struct SendFileCall(SafeHandle socket, SafeHandle file, long offset, nuint count) : ICall
    {
        public nint Invoke()
        {
            long position = offset;
            return LibC.sendfile(socket, file, &position, count);
        }
    }

    private readonly struct ReadFileCall(SafeHandle fd, byte* buffer, nuint length, long offset) : ICall
    {
        public nint Invoke() => LibC.pread(fd, buffer, length, offset);
    }

    private readonly struct ReadFileIfCachedCall(SafeHandle fd, byte* buffer, nuint length, long offset) : ICall
    {
        public nint Invoke()
        {
            LibC.IOVector vector = new() { Base = buffer, Length = length };
            return LibC.preadv2(fd, &vector, 1, offset, LibC.RWF_NOWAIT);
        }
    }

    private readonly struct CacheStatCall(SafeHandle fd, long offset, long length) : ICall
    {
        public nint Invoke()
        {
            LibC.CacheStatRange range = new() { Offset = (ulong)offset, Length = (ulong)length };
            LibC.CacheStat stat = default;
            nint result = LibC.syscall_cachestat(LibC.SYS_cachestat, fd, &range, &stat, 0);
            return result < 0 ? result : (nint)stat.Cached;
        }
    }

    private readonly struct ConnectCall(SafeHandle fd, byte* address, int length) : ICall
    {
        public nint Invoke() => LibC.connect(fd, address, length);
    }

    private readonly struct PendingErrorCall(SafeHandle fd) : ICall
    {
        public nint Invoke()
        {
            int error = 0;
            int length = sizeof(int);
            int result = LibC.getsockopt(fd, LibC.SOL_SOCKET, LibC.SO_ERROR, &error, &length);
            return result < 0 ? result : error;
        }
    }

    private readonly struct ShutdownCall(SafeHandle fd, int how) : ICall
    {
        public nint Invoke() => LibC.shutdown(fd, how);
    }

    private readonly struct SetOptionCall(SafeHandle fd, int level, int name, int value) : ICall
    {
        public nint Invoke()
        {
            int local = value;
            return LibC.setsockopt(fd, level, name, &local, sizeof(int));
        }
    }

    private readonly struct SetLingerCall(SafeHandle fd, LibC.Linger* linger) : ICall
    {
        public nint Invoke() => LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_LINGER, (int*)linger, sizeof(LibC.Linger));
    }

    private readonly struct CreatePipeCall(int* fds) : ICall
    {
        /// <summary>
        /// O_CLOEXEC: a child process the app starts must not inherit the pipe (a stray copy of the write end
        /// would also keep the pipe alive). O_NONBLOCK: read(2) and write(2) on the pipe never block a loop
        /// thread, as SPLICE_F_NONBLOCK does for splice and tee.
        /// </summary>
        private const int Flags = LibC.O_CLOEXEC | LibC.O_NONBLOCK;

        public nint Invoke() => LibC.pipe2(fds, Flags);
    }

    private readonly struct FcntlCall(SafeHandle fd, int command, int argument) : ICall
    {
        public nint Invoke() => LibC.fcntl(fd, command, argument);
    }

    private readonly struct SpliceCall(SafeHandle input, long? inputOffset, SafeHandle output, long? outputOffset, nuint length, uint flags) : ICall
    {
        public nint Invoke()
        {
            // Fresh copies on every attempt: after EINTR nothing moved, so the same offsets are right again.
            long inputPosition = inputOffset.GetValueOrDefault();
            long outputPosition = outputOffset.GetValueOrDefault();
            return LibC.splice(input, inputOffset.HasValue ? &inputPosition : null, output, outputOffset.HasValue ? &outputPosition : null, length, flags);
        }
    }

    private readonly struct PreallocateCall(SafeHandle fd, long offset, long length) : ICall
    {
        public nint Invoke() => LibC.fallocate(fd, LibC.FALLOC_FL_KEEP_SIZE, offset, length);
    }

    private readonly struct TeeCall(SafeHandle input, SafeHandle output, nuint length, uint flags) : ICall
    {
        public nint Invoke() => LibC.tee(input, output, length, flags);
    }

    private readonly struct ReadCall(SafeHandle fd, byte* buffer, nuint length) : ICall
    {
        public nint Invoke() => LibC.read(fd, buffer, length);
    }

    private readonly struct WriteFileCall(SafeHandle fd, byte* buffer, nuint length, long? offset) : ICall
    {
        public nint Invoke() => offset is long position ? LibC.pwrite(fd, buffer, length, position) : LibC.write(fd, buffer, length);
    }
}
