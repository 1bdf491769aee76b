using System.Net;
using System.Net.Sockets;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// Accepts connections from one listening socket on one loop. With SO_REUSEPORT every loop has its own
/// acceptor and keeps what it accepts; a single acceptor (Unix sockets, inherited handles, or ReusePort off)
/// hands connections to the loops round-robin.
///
/// Back-pressure: it accepts only while its listener has room for another connection Kestrel has not taken
/// yet (<see cref="SpliceConnectionListener.TryReserve"/>). When there is none it pauses, and the connections
/// wait in the kernel's backlog, costing this process nothing; the listener resumes it when Kestrel takes one.
/// </summary>
internal sealed unsafe class Acceptor : IEpollHandler
{
    /// <summary>
    /// How long to wait before accepting again after the process ran out of descriptors or memory. The
    /// pending connection stays in the backlog meanwhile; retrying at once would spin the loop.
    /// </summary>
    private static readonly TimeSpan ResourceExhaustedRetryDelay = TimeSpan.FromMilliseconds(50);

    private readonly FileDescriptorHandle _socket;
    private readonly EventLoop _loop;
    private readonly SpliceConnectionListener _listener;
    private readonly SpliceTransportContext _context;
    private readonly EndPoint _template;
    private readonly bool _distribute;
    private bool _stopped;

    /// <summary>1 while a retry timer is pending, so that failures in a row never stack timers.</summary>
    private int _retryPending;

    /// <summary>1 while paused because the listener was full; whoever clears it resumes the acceptor.</summary>
    private int _paused;

    public Acceptor(FileDescriptorHandle socket, EventLoop loop, SpliceConnectionListener listener, SpliceTransportContext context, EndPoint template, bool distribute)
    {
        _socket = socket;
        _loop = loop;
        _listener = listener;
        _context = context;
        _template = template;
        _distribute = distribute;
    }

    public EventLoop Loop => _loop;

    /// <summary>Registers the listening socket. Edge-triggered: an event means "accept until EAGAIN".</summary>
    public void StartOnLoop() => _loop.RegisterListener(_socket, this);

    public void OnEvents(uint events) => AcceptAll();

    /// <summary>
    /// The listener has room again: accept what waits in the backlog. Any thread. No edge would come for
    /// connections that were already queued when the acceptor paused, so this runs the accept loop itself.
    /// </summary>
    public void ResumeIfPaused()
    {
        if (Interlocked.Exchange(ref _paused, 0) == 1)
        {
            _loop.Schedule(static state => ((Acceptor)state!).AcceptAll(), this);
        }
    }

    private void AcceptAll()
    {
        byte* address = stackalloc byte[SocketAddresses.MaxAddressSize];
        while (!_stopped)
        {
            if (!_listener.TryReserve())
            {
                // Invariant (with ResumeIfPaused): the flag is set with a full fence before the listener is
                // asked again, so either the second ask sees the room a taker made, or that taker sees the flag.
                Interlocked.Exchange(ref _paused, 1);
                if (!_listener.TryReserve())
                {
                    return;
                }
                Interlocked.Exchange(ref _paused, 0);
            }

            int addressLength = SocketAddresses.MaxAddressSize;
            SyscallResult accepted = _context.Syscalls.Accept(_socket, address, &addressLength);
            if (!accepted.IsSuccess)
            {
                _listener.ReleaseReservation();
                if (accepted.WouldBlock)
                {
                    return;
                }
                switch (accepted.Errno)
                {
                    case Errno.ECONNABORTED: // The client gave up while queued; take the next one.
                        continue;
                    case Errno.EMFILE or Errno.ENFILE or Errno.ENOBUFS or Errno.ENOMEM:
                        Log.AcceptResourcesExhausted(_context.Logger, accepted.ToException("accept4"));
                        RetryLater();
                        return;
                    default:
                        Log.AcceptFailed(_context.Logger, accepted.ToException("accept4"));
                        RetryLater();
                        return;
                }
            }

            var socket = new FileDescriptorHandle((int)accepted.Count);
            try
            {
                _context.ApplyConnectionOptions(socket, _template);
                EndPoint? remote = ParseRemote(address, addressLength);
                EventLoop loop = _distribute ? _context.Loops.Next() : _loop;
                var connection = new SpliceConnection(socket, loop, _context, LocalEndPointOf(socket), remote, _template);
                _context.Metrics.ConnectionOpened(_template);
                _listener.Enqueue(connection);
            }
            catch (Exception ex)
            {
                // A peer that reset before its options were set: drop it, keep accepting.
                _listener.ReleaseReservation();
                Log.AcceptFailed(_context.Logger, ex);
                socket.Dispose();
            }
        }
    }

    /// <summary>
    /// The connection's local end point, found once at accept (as Kestrel's socket transport does) so that it
    /// never needs the descriptor later. A listener bound to one address is that address; only a wildcard
    /// listener (0.0.0.0, [::]) needs getsockname to know which address the client reached.
    /// </summary>
    private EndPoint? LocalEndPointOf(FileDescriptorHandle socket) => _template switch
    {
        IPEndPoint ip when !ip.Address.Equals(IPAddress.Any) && !ip.Address.Equals(IPAddress.IPv6Any) => ip,
        _ => SocketAddresses.GetLocal(socket, _template) ?? _template,
    };

    private EndPoint? ParseRemote(byte* address, int length)
    {
        if (_template is UnixDomainSocketEndPoint)
        {
            // Clients of a Unix socket are almost always unnamed; Kestrel's transport reports none either.
            return null;
        }
        var socketAddress = new SocketAddress(_template.AddressFamily, length);
        new ReadOnlySpan<byte>(address, length).CopyTo(socketAddress.Buffer.Span);
        return _template.Create(socketAddress);
    }

    private void RetryLater()
    {
        if (Interlocked.Exchange(ref _retryPending, 1) != 0)
        {
            return;
        }
        _ = Task.Delay(ResourceExhaustedRetryDelay).ContinueWith(
            static (_, state) =>
            {
                var acceptor = (Acceptor)state!;
                acceptor._loop.Schedule(static s =>
                {
                    var acceptor = (Acceptor)s!;
                    Volatile.Write(ref acceptor._retryPending, 0);
                    acceptor.AcceptAll();
                }, acceptor);
            },
            this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Stops accepting and closes the listening socket (unless it was inherited: see ListenSockets.Adopt). Loop thread only.</summary>
    public void StopOnLoop()
    {
        if (_stopped)
        {
            return;
        }
        _stopped = true;
        _loop.Unregister(_socket);
        _socket.Dispose();
    }
}
