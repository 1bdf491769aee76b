using System.Net;
using System.Net.Sockets;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// Accepts connections from one listening socket on one loop. With SO_REUSEPORT every loop has its own
/// acceptor and keeps what it accepts; a single acceptor (Unix sockets, inherited handles, or ReusePort off)
/// hands connections to the loops round-robin.
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
    public void StartOnLoop() => _loop.Register(_socket, this, LibC.EPOLLIN);

    public void OnEvents(uint events) => AcceptAll();

    private void AcceptAll()
    {
        byte* address = stackalloc byte[SocketAddresses.MaxAddressSize];
        while (!_stopped)
        {
            int addressLength = SocketAddresses.MaxAddressSize;
            int fd = LibC.accept4(_socket, address, &addressLength, LibC.SOCK_NONBLOCK | LibC.SOCK_CLOEXEC);
            if (fd < 0)
            {
                int errno = LibC.LastErrno;
                switch (errno)
                {
                    case Errno.EAGAIN:
                        return;
                    case Errno.EINTR:
                    case Errno.ECONNABORTED: // The client gave up while queued; take the next one.
                        continue;
                    case Errno.EMFILE or Errno.ENFILE or Errno.ENOBUFS or Errno.ENOMEM:
                        Log.AcceptResourcesExhausted(_context.Logger, new SyscallException("accept4", errno));
                        RetryLater();
                        return;
                    default:
                        Log.AcceptFailed(_context.Logger, new SyscallException("accept4", errno));
                        RetryLater();
                        return;
                }
            }

            var socket = new FileDescriptorHandle(fd);
            try
            {
                if (_template is IPEndPoint && _context.Options.NoDelay)
                {
                    LibC.SetSocketOption(socket, LibC.IPPROTO_TCP, LibC.TCP_NODELAY, 1, "TCP_NODELAY");
                }
                EndPoint? remote = ParseRemote(address, addressLength);
                EventLoop loop = _distribute ? _context.Loops.Next() : _loop;
                var connection = new SpliceConnection(socket, loop, _context, _template, remote);
                _context.Metrics.ConnectionOpened(_template);
                _listener.Dispatch(connection);
            }
            catch (Exception ex)
            {
                // A peer that reset before its options were set: drop it, keep accepting.
                Log.AcceptFailed(_context.Logger, ex);
                socket.Dispose();
            }
        }
    }

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
        _ = Task.Delay(ResourceExhaustedRetryDelay).ContinueWith(
            static (_, state) =>
            {
                var acceptor = (Acceptor)state!;
                acceptor._loop.Schedule(static s => ((Acceptor)s!).AcceptAll(), acceptor);
            },
            this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Stops accepting and closes the listening socket. Loop thread only.</summary>
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
