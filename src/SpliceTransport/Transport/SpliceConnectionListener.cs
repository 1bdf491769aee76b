using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// One bound end point. Its acceptors run on the loops; what they accept waits here, unstarted (no
/// registration, no pump, no buffer), until Kestrel's <see cref="AcceptAsync"/> takes it and starts it on its
/// loop. At most <see cref="MaxPendingConnections"/> wait here: beyond that the acceptors pause and the
/// kernel's backlog holds the rest, as it does for Kestrel's socket transport, which accepts only when asked.
/// </summary>
internal sealed class SpliceConnectionListener : IConnectionListener
{
    /// <summary>Mode bits of a socket inode (S_IFSOCK), to remove only stale sockets, never other files.</summary>
    private const int S_IFSOCK = 0xC000;

    /// <summary>
    /// Accepted connections Kestrel has not taken yet. Kestrel's accept loop takes them as fast as it runs, so
    /// this only has to absorb one burst per loop turn; more would hold connections (and let clients send
    /// into them) that the server cannot serve yet, where the kernel's backlog holds them for nothing.
    /// </summary>
    internal const int MaxPendingConnections = 64;

    private readonly SpliceTransportContext _context;
    private readonly Channel<SpliceConnection> _accepted = Channel.CreateUnbounded<SpliceConnection>(
        new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    private readonly List<Acceptor> _acceptors = new();
    private string? _unixSocketPath;
    private int _unbound;

    /// <summary>Connections reserved or queued and not yet taken by <see cref="AcceptAsync"/>.</summary>
    private int _pending;

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
                    ListenSockets.ThrowIfPortTaken(options.Syscalls, ip);
                    FileDescriptorHandle first = ListenSockets.Create(options.Syscalls, ip, options.Backlog, reusePort: true);
                    EndPoint = SocketAddresses.GetLocal(first, ip) ?? ip;
                    _acceptors.Add(new Acceptor(first, loops[0], this, _context, EndPoint, distribute: false));
                    for (int i = 1; i < loops.Count; i++)
                    {
                        FileDescriptorHandle socket = ListenSockets.Create(options.Syscalls, EndPoint, options.Backlog, reusePort: true);
                        _acceptors.Add(new Acceptor(socket, loops[i], this, _context, EndPoint, distribute: false));
                    }
                    break;
                case IPEndPoint ip:
                    FileDescriptorHandle single = ListenSockets.Create(options.Syscalls, ip, options.Backlog, reusePort: false);
                    EndPoint = SocketAddresses.GetLocal(single, ip) ?? ip;
                    _acceptors.Add(new Acceptor(single, loops[0], this, _context, EndPoint, distribute: true));
                    break;
                case UnixDomainSocketEndPoint unix:
                    RemoveStaleSocketFile(options.Syscalls, unix);
                    FileDescriptorHandle unixSocket = ListenSockets.Create(options.Syscalls, unix, options.Backlog, reusePort: false);
                    _unixSocketPath = IsPathName(unix) ? unix.ToString() : null;
                    _acceptors.Add(new Acceptor(unixSocket, loops[0], this, _context, unix, distribute: true));
                    break;
                case FileHandleEndPoint handle:
                    FileDescriptorHandle inherited = ListenSockets.Adopt(options.Syscalls, handle, out EndPoint template);
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

    /// <summary>Connections accepted and waiting for Kestrel (for tests and diagnostics).</summary>
    internal int PendingCount => Volatile.Read(ref _pending);

    /// <summary>Reserves room for one more accepted connection; false when the listener is full. Acceptors only.</summary>
    public bool TryReserve()
    {
        if (Interlocked.Increment(ref _pending) <= MaxPendingConnections)
        {
            return true;
        }
        Interlocked.Decrement(ref _pending);
        return false;
    }

    /// <summary>Gives back a reservation that produced no connection.</summary>
    public void ReleaseReservation() => Interlocked.Decrement(ref _pending);

    /// <summary>Queues an accepted, unstarted connection for Kestrel, in a slot reserved with <see cref="TryReserve"/>.</summary>
    public void Enqueue(SpliceConnection connection)
    {
        if (!_accepted.Writer.TryWrite(connection))
        {
            // Unbound between accept and now: nobody will take it.
            ReleaseReservation();
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
                // Invariant (with Acceptor.AcceptAll): the room is made with a full fence before the paused
                // flags are read, so a pausing acceptor either sees the room or is resumed here.
                Interlocked.Decrement(ref _pending);
                foreach (Acceptor acceptor in _acceptors)
                {
                    acceptor.ResumeIfPaused();
                }
                connection.Start();
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
            // Never started: the abort resets and closes it at once.
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
    private static void RemoveStaleSocketFile(Syscalls syscalls, UnixDomainSocketEndPoint endPoint)
    {
        if (IsPathName(endPoint) && syscalls.Stat(endPoint.ToString(), out FileStatus status).IsSuccess && (status.Mode & LibC.S_IFMT) == S_IFSOCK)
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
