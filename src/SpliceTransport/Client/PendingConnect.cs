using System.Net;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Transport;

namespace SpliceTransport.Client;

/// <summary>
/// One non-blocking connect(2) on a loop: it starts the handshake, waits for the socket's writability (the
/// kernel's "the handshake ended", in success or failure), and reads the outcome with SO_ERROR.
///
/// Invariant: everything here runs on the loop thread, so the end of the handshake, a timeout and a cancellation
/// cannot race: whichever the loop runs first finishes the connect, and the others find it finished. The socket is
/// registered with the loop only while the handshake goes on, under this handler; a connected socket is then
/// registered again by its <see cref="SpliceConnection"/> (epoll reports at once a readiness it already has, so
/// nothing that came meanwhile is lost).
/// </summary>
internal sealed class PendingConnect : IEpollHandler
{
    /// <summary>The events that end a handshake: writable when it succeeded, an error or hang-up when it failed.</summary>
    private const uint HandshakeEvents = LibC.EPOLLOUT | LibC.EPOLLRDHUP;

    /// <summary>The outcome when the caller gave up first (timeout or cancellation): not an errno of connect's.</summary>
    public const int Abandoned = -1;

    private readonly EventLoop _loop;
    private readonly FileDescriptorHandle _socket;
    private readonly Syscalls _syscalls;
    private readonly SocketAddress _address;
    private readonly TaskCompletionSource<int> _outcome = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _registered;

    private PendingConnect(EventLoop loop, FileDescriptorHandle socket, Syscalls syscalls, SocketAddress address)
    {
        _loop = loop;
        _socket = socket;
        _syscalls = syscalls;
        _address = address;
    }

    /// <summary>The outcome: 0 when connected, connect's errno when refused or unreachable, or <see cref="Abandoned"/>.</summary>
    public Task<int> Outcome => _outcome.Task;

    /// <summary>Starts connecting <paramref name="socket"/> to <paramref name="address"/> on <paramref name="loop"/>.</summary>
    public static PendingConnect Start(EventLoop loop, FileDescriptorHandle socket, Syscalls syscalls, SocketAddress address)
    {
        var connect = new PendingConnect(loop, socket, syscalls, address);
        loop.Schedule(static state => ((PendingConnect)state!).BeginOnLoop(), connect);
        return connect;
    }

    /// <summary>
    /// Gives up on the handshake (the caller's timeout or cancellation) and closes the socket, on the loop, after
    /// it is unregistered. The caller will not use the socket whatever the outcome, so it is closed even when the
    /// handshake ended just before this ran.
    /// </summary>
    public void Abandon() => _loop.Schedule(static state =>
    {
        var connect = (PendingConnect)state!;
        connect.Finish(Abandoned);
        connect._socket.Dispose();
    }, this);

    private void BeginOnLoop()
    {
        if (_outcome.Task.IsCompleted)
        {
            return; // Abandoned before the loop got here.
        }
        try
        {
            _loop.Register(_socket, this, HandshakeEvents);
            _registered = true;
        }
        catch (SyscallException ex)
        {
            Finish(ex.Errno);
            return;
        }
        SyscallResult started = _syscalls.Connect(_socket, _address);
        if (started.IsSuccess)
        {
            Finish(0); // A Unix socket, or loopback at once: no handshake to wait for.
        }
        else if (started.Errno is not (Errno.EINPROGRESS or Errno.EALREADY))
        {
            Finish(started.Errno);
        }
        // Otherwise the handshake goes on: OnEvents sees its end.
    }

    public void OnEvents(uint events)
    {
        if (_outcome.Task.IsCompleted)
        {
            return;
        }
        SyscallResult pending = _syscalls.PendingError(_socket);
        Finish(pending.IsSuccess ? (int)pending.Count : pending.Errno);
    }

    /// <summary>Unregisters the socket and sets the outcome, once; false if it was already set.</summary>
    private bool Finish(int outcome)
    {
        if (_outcome.Task.IsCompleted)
        {
            return false;
        }
        if (_registered)
        {
            _loop.Unregister(_socket);
            _registered = false;
        }
        _outcome.SetResult(outcome);
        return true;
    }
}
