using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// One bound end point. Its acceptors run on the loops; what they accept is started on its loop and then
/// queued for Kestrel's <see cref="AcceptAsync"/>.
/// </summary>
internal sealed class SpliceConnectionListener : IConnectionListener
{
    /// <summary>Mode bits of a socket inode (S_IFSOCK), to remove only stale sockets, never other files.</summary>
    private const int S_IFSOCK = 0xC000;

    private readonly SpliceTransportContext _context;
    private readonly Channel<SpliceConnection> _accepted = Channel.CreateUnbounded<SpliceConnection>(
        new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    private readonly List<Acceptor> _acceptors = new();
    private string? _unixSocketPath;
    private int _unbound;

    public SpliceConnectionListener(EndPoint endPoint, SpliceTransportContext context)
    {
        EndPoint = endPoint;
        _context = context;
    }

    public EndPoint EndPoint { get; private set; }

    /// <summary>Creates the listening sockets and starts accepting on the loops.</summary>
    public async Task BindAsync()
    {
        IReadOnlyList<EventLoop> loops = _context.Loops.Loops;
        SpliceTransportOptions options = _context.Options;
        try
        {
            switch (EndPoint)
            {
                case IPEndPoint ip when options.ReusePort && loops.Count > 1:
                    // The first bind picks the port (for port 0); the others join it with SO_REUSEPORT.
                    ListenSockets.ThrowIfPortTaken(ip);
                    FileDescriptorHandle first = ListenSockets.Create(ip, options.Backlog, reusePort: true);
                    EndPoint = SocketAddresses.GetLocal(first, ip) ?? ip;
                    _acceptors.Add(new Acceptor(first, loops[0], this, _context, EndPoint, distribute: false));
                    for (int i = 1; i < loops.Count; i++)
                    {
                        FileDescriptorHandle socket = ListenSockets.Create(EndPoint, options.Backlog, reusePort: true);
                        _acceptors.Add(new Acceptor(socket, loops[i], this, _context, EndPoint, distribute: false));
                    }
                    break;
                case IPEndPoint ip:
                    FileDescriptorHandle single = ListenSockets.Create(ip, options.Backlog, reusePort: false);
                    EndPoint = SocketAddresses.GetLocal(single, ip) ?? ip;
                    _acceptors.Add(new Acceptor(single, loops[0], this, _context, EndPoint, distribute: true));
                    break;
                case UnixDomainSocketEndPoint unix:
                    RemoveStaleSocketFile(unix);
                    FileDescriptorHandle unixSocket = ListenSockets.Create(unix, options.Backlog, reusePort: false);
                    _unixSocketPath = IsPathName(unix) ? unix.ToString() : null;
                    _acceptors.Add(new Acceptor(unixSocket, loops[0], this, _context, unix, distribute: true));
                    break;
                case FileHandleEndPoint handle:
                    FileDescriptorHandle inherited = ListenSockets.Adopt(handle, out EndPoint template);
                    _acceptors.Add(new Acceptor(inherited, loops[0], this, _context, template, distribute: true));
                    break;
                default:
                    throw new NotSupportedException($"SpliceTransport cannot bind end point '{EndPoint}' of type {EndPoint.GetType().Name}.");
            }
        }
        catch
        {
            await UnbindAsync().ConfigureAwait(false);
            throw;
        }

        await OnLoopsAsync(static acceptor => acceptor.StartOnLoop()).ConfigureAwait(false);
        Log.ListenerBound(_context.Logger, EndPoint.ToString() ?? string.Empty, _acceptors.Count);
    }

    /// <summary>Starts <paramref name="connection"/> on its loop, then hands it to Kestrel. Called by acceptors.</summary>
    public void Dispatch(SpliceConnection connection)
    {
        if (connection.Loop.IsOnLoopThread)
        {
            StartAndQueue(connection);
        }
        else
        {
            connection.Loop.Schedule(static state =>
            {
                var (listener, connection) = ((SpliceConnectionListener, SpliceConnection))state!;
                listener.StartAndQueue(connection);
            }, (this, connection));
        }
    }

    private void StartAndQueue(SpliceConnection connection)
    {
        connection.StartOnLoop();
        if (!_accepted.Writer.TryWrite(connection))
        {
            // Unbound between accept and now: nobody will take it.
            connection.Abort(new ConnectionAbortedException("The listener was unbound."));
            _ = connection.DisposeAsync();
        }
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await _accepted.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (_accepted.Reader.TryRead(out SpliceConnection? connection))
            {
                return connection;
            }
        }
        return null;
    }

    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _unbound, 1) != 0)
        {
            return;
        }
        await OnLoopsAsync(static acceptor => acceptor.StopOnLoop()).ConfigureAwait(false);
        _accepted.Writer.TryComplete();
        while (_accepted.Reader.TryRead(out SpliceConnection? orphan))
        {
            orphan.Abort(new ConnectionAbortedException("The listener was unbound before the connection was accepted."));
            await orphan.DisposeAsync().ConfigureAwait(false);
        }
        if (_unixSocketPath is not null)
        {
            TryDelete(_unixSocketPath);
        }
    }

    public ValueTask DisposeAsync() => UnbindAsync();

    private Task OnLoopsAsync(Action<Acceptor> action)
    {
        var tasks = new List<Task>(_acceptors.Count);
        foreach (Acceptor acceptor in _acceptors)
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            acceptor.Loop.Schedule(static state =>
            {
                var (acceptor, action, done) = ((Acceptor, Action<Acceptor>, TaskCompletionSource))state!;
                try
                {
                    action(acceptor);
                    done.SetResult();
                }
                catch (Exception ex)
                {
                    done.SetException(ex);
                }
            }, (acceptor, action, done));
            tasks.Add(done.Task);
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>Abstract sockets (a leading NUL) and unnamed ones have no file to create or remove.</summary>
    private static bool IsPathName(UnixDomainSocketEndPoint endPoint)
    {
        string path = endPoint.ToString();
        return path.Length > 0 && path[0] != '\0' && path[0] != '@';
    }

    /// <summary>As Kestrel does: a socket file left by a previous run would make bind fail with EADDRINUSE.</summary>
    private static void RemoveStaleSocketFile(UnixDomainSocketEndPoint endPoint)
    {
        if (IsPathName(endPoint) && LibC.TryStat(endPoint.ToString(), out LibC.FileStatus status) && (status.Mode & LibC.S_IFMT) == S_IFSOCK)
        {
            TryDelete(endPoint.ToString());
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Already gone, or not ours to remove: binding (or the next run) reports a real conflict.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
