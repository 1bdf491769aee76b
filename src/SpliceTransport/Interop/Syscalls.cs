using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

/// <summary>
/// The system calls of the data path (accept, receive, send, sendfile, pread, shutdown, socket options), each
/// returning a <see cref="SyscallResult"/>. EINTR is retried here, in <see cref="Run{TCall}"/>, and nowhere
/// else; EAGAIN is returned as <see cref="SyscallResult.WouldBlock"/> for the caller to wait on readiness.
///
/// Every member is virtual: this class is the fault-injection seam. Tests replace the registered instance
/// with a subclass that returns EAGAIN storms, short counts, EINTR or resets, and check that each ends in the
/// right state. <see cref="Default"/> is what production uses; a virtual call costs nothing next to a syscall.
/// </summary>
internal unsafe class Syscalls
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
}
