using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// One accepted socket: its pipes, its two pumps, and its life from accept to close, as one state machine
/// (<see cref="ConnectionState"/>) that only the loop thread changes.
///
/// Threads: Kestrel uses the pipes from any thread. The receive pump and every state change run on
/// <see cref="Loop"/>; calls from outside (start, abort, dispose, the send pump's end) are scheduled onto it,
/// in order. The send pump is one logical thread that runs on the thread that flushed until it must wait for
/// the socket, then on the loop; it reads the state (volatile) but never changes it.
///
/// The only way out is <see cref="Shutdown"/>, as in Kestrel's <c>SocketConnection</c>: with no reason (a
/// graceful end) the peer gets a FIN; with a reason (an abort or an error) it gets a reset. Either way both
/// pumps are woken to end, and once both have ended the descriptor is closed, once, on the loop.
/// </summary>
internal sealed partial class SpliceConnection : ConnectionContext
{
    /// <summary>The states of a connection, in the only order they can come in (a state never goes back).</summary>
    internal enum ConnectionState
    {
        /// <summary>Accepted and waiting in the listener for Kestrel: not registered, no pump, no buffer.</summary>
        Created,

        /// <summary>Taken by Kestrel: registered with the loop, both pumps running.</summary>
        Open,

        /// <summary>Kestrel completed the output and the send pump sent it all: FIN sent, still reading.</summary>
        OutputShutDown,

        /// <summary>Kestrel disposed the connection while the send pump still had bytes to send.</summary>
        Draining,

        /// <summary><see cref="Shutdown"/> ran: traffic stopped, pumps told to end.</summary>
        ShuttingDown,

        /// <summary>Both pumps ended and the descriptor is closed.</summary>
        Closed,
    }

    private readonly SpliceTransportContext _context;

    /// <summary>The end point of the listener that accepted the connection: the metrics' tags come from it.</summary>
    private readonly EndPoint _listenEndPoint;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly SpliceOutputWriter _outputWriter;
    private readonly IDuplexPipe _originalTransport;
    private readonly ReceivePump _receivePump;
    private readonly SendPump _sendPump;
    private readonly CancellationTokenSource _connectionClosed = new();
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private IDuplexPipe _transport;
    private IDictionary<object, object?>? _items;
    private volatile ConnectionState _state;

    /// <summary>Set once the socket is registered with the loop, so the close knows to unregister it.</summary>
    private bool _registered;
    private Exception? _shutdownReason;
    private int _disposed;

    public SpliceConnection(FileDescriptorHandle socket, EventLoop loop, SpliceTransportContext context, EndPoint? localEndPoint, EndPoint? remoteEndPoint, EndPoint listenEndPoint)
    {
        _listenEndPoint = listenEndPoint;
        Socket = socket;
        Loop = loop;
        _context = context;
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        IsTcp = localEndPoint is IPEndPoint;
        ConnectionId = ConnectionIds.Next();
        Readiness = new SocketReadiness(loop);

        _input = new Pipe(context.InputOptions(loop));
        _output = new Pipe(context.OutputOptions(loop));
        _outputWriter = new SpliceOutputWriter(_output.Writer, _output.Reader);
        _originalTransport = new DuplexPipe(_input.Reader, _outputWriter);
        _transport = _originalTransport;
        _receivePump = new ReceivePump(this, _input.Writer);
        _sendPump = new SendPump(this, _output.Reader, _outputWriter, context.Options.MaxSendFileChunkSize);
    }

    /// <summary>The connected, non-blocking socket.</summary>
    public FileDescriptorHandle Socket { get; }

    /// <summary>The loop that owns the socket.</summary>
    public EventLoop Loop { get; }

    public SocketReadiness Readiness { get; }

    /// <summary>The system calls of the data path (the fault-injection seam in tests).</summary>
    public Syscalls Syscalls => _context.Syscalls;

    public Microsoft.Extensions.Logging.ILogger Logger => _context.Logger;

    /// <summary>
    /// What a failed system call on the socket means for the connection (<see cref="ErrnoExceptions.ForSocket"/>), logged
    /// once: a reset (the peer left) as event 106, anything else as event 107 (Debug: Kestrel reports the aborted
    /// request itself). Both pumps end with it.
    /// </summary>
    public Exception SocketFailure(SyscallResult result, string syscall, string? detail = null)
    {
        IOException error = ErrnoExceptions.ForSocket(result, syscall, detail);
        if (error is ConnectionResetException)
        {
            Log.ConnectionReset(Logger, ConnectionId);
        }
        else
        {
            Log.ConnectionError(Logger, ConnectionId, error);
        }
        return error;
    }

    public SpliceTransportOptions Options => _context.Options;

    public SpliceMetrics Metrics => _context.Metrics;

    /// <summary>Keeps disk reads of cold files off the loop (see <see cref="FileResidency"/>).</summary>
    public FileResidency Residency => _context.Residency;

    /// <summary>The transport's cache of open file descriptors (see <see cref="OpenFileCache"/>).</summary>
    public OpenFileCache Files => _context.Files;

    /// <summary>TCP (rather than a Unix socket): TCP options such as TCP_NODELAY apply.</summary>
    public bool IsTcp { get; }

    /// <summary>The current state; changed on the loop thread only, readable anywhere.</summary>
    internal ConnectionState State => _state;

    /// <summary>True once <see cref="Shutdown"/> has run: the pumps stop at their next step.</summary>
    public bool IsShuttingDown => _state >= ConnectionState.ShuttingDown;

    /// <summary>Why the connection was shut down with a reset, if it was; the input completes with it.</summary>
    public Exception? ShutdownReason => _shutdownReason;

    /// <summary>The writer the response body feature queues files through.</summary>
    public SpliceOutputWriter OutputWriter => _outputWriter;

    /// <summary>True while nothing (TLS, connection logging) has wrapped the transport pipe.</summary>
    public bool IsTransportPipeOwned => ReferenceEquals(_transport, _originalTransport);

    public override string ConnectionId { get; set; }

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport
    {
        get => _transport;
        set => _transport = value;
    }

    public override CancellationToken ConnectionClosed
    {
        get => _connectionClosed.Token;
        set => throw new NotSupportedException("The ConnectionClosed token of a SpliceTransport connection is owned by the transport.");
    }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>Kestrel has taken the connection: register the socket and start both pumps, on the loop.</summary>
    public void Start() => RunOnLoop(static connection => connection.StartOnLoop());

    private void StartOnLoop()
    {
        if (_state != ConnectionState.Created)
        {
            return; // Aborted or disposed before the loop got here: Shutdown closed it already.
        }
        try
        {
            Loop.Register(Socket, Readiness);
        }
        catch (Exception ex)
        {
            Log.ConnectionError(Logger, ConnectionId, ex);
            MoveTo(ConnectionState.ShuttingDown, new ConnectionAbortedException("The connection could not be registered with its event loop.", ex));
            return;
        }
        _registered = true;
        MoveTo(ConnectionState.Open);
        Task receiving = _receivePump.RunAsync();
        Task sending = _sendPump.RunAsync();
        _ = CloseWhenPumpsEndAsync(receiving, sending);
    }

    private async Task CloseWhenPumpsEndAsync(Task receiving, Task sending)
    {
        await receiving.ConfigureAwait(false);
        Task closedFired = FireConnectionClosedAsync();
        await sending.ConfigureAwait(false);
        await closedFired.ConfigureAwait(false);
        RunOnLoop(static connection => connection.MoveTo(ConnectionState.Closed));
    }

    /// <summary>
    /// Kestrel's RequestAborted follows this token. Like Kestrel's socket transport, it fires when the
    /// receive side ends (FIN, reset or shutdown), on the thread pool so that no callback runs on the loop.
    /// The close waits for it, so the token source is not disposed before it has fired.
    /// </summary>
    private Task FireConnectionClosedAsync() => Task.Run(() =>
    {
        try
        {
            _connectionClosed.Cancel();
        }
        catch (Exception ex)
        {
            Log.ConnectionError(Logger, ConnectionId, ex);
        }
    });

    /// <summary>Called by the send pump as it ends, on whatever thread it ran last.</summary>
    public void OnSendPumpEnded(Exception? error) => RunOnLoop(static (connection, error) =>
    {
        if (error is not null)
        {
            connection.MoveTo(ConnectionState.ShuttingDown, error as ConnectionAbortedException ?? new ConnectionAbortedException(error.Message, error));
            return;
        }
        switch (connection._state)
        {
            case ConnectionState.Open:
                // Kestrel completed the output: FIN now, and keep reading until the peer closes too or Kestrel
                // disposes the connection (a half-close, which Kestrel's socket transport does not offer).
                connection.MoveTo(ConnectionState.OutputShutDown);
                break;
            case ConnectionState.Draining:
                connection.MoveTo(ConnectionState.ShuttingDown);
                break;
        }
    }, error);

    /// <summary>
    /// Ends the connection at once. With a reason it is an abort, and the peer gets a reset. Without one (Kestrel
    /// passes null when the client has closed its side and nothing is left to answer: "closed gracefully", unless
    /// KestrelServerOptions' FinOnError is set) the end is graceful, a FIN, as on Kestrel's socket transport, whose
    /// Shutdown treats a null reason the same way. Either way what the send pump has not sent yet is dropped.
    /// </summary>
    public override void Abort(ConnectionAbortedException? abortReason)
    {
        RunOnLoop(static (connection, reason) =>
        {
            if (!connection.IsShuttingDown)
            {
                Log.ConnectionAborted(connection.Logger, connection.ConnectionId, reason?.Message ?? "closed gracefully");
                connection.MoveTo(ConnectionState.ShuttingDown, reason);
            }
        }, abortReason);
    }

    /// <summary>
    /// The one place the connection's state changes, and what each change does. Loop thread only. States only move
    /// forward (in the order of <see cref="ConnectionState"/>): a step back or a repeat changes nothing, which is what
    /// lets an abort, the pumps' ends and Kestrel's dispose race to the same end. <paramref name="reason"/> is for
    /// <see cref="ConnectionState.ShuttingDown"/>: an abort or an error, or none for a graceful end.
    /// </summary>
    private void MoveTo(ConnectionState next, Exception? reason = null)
    {
        ConnectionState previous = _state;
        if (next <= previous)
        {
            return;
        }
        switch (next)
        {
            case ConnectionState.Open or ConnectionState.Draining:
                _state = next;
                break;
            case ConnectionState.OutputShutDown:
                _state = next;
                // The result is not needed: the only failure here is ENOTCONN, a peer that has gone already, and
                // the receive pump learns that from its next read.
                _ = Syscalls.Shutdown(Socket, LibC.SHUT_WR);
                Log.ConnectionWriteFin(Logger, ConnectionId, "the application completed the output");
                break;
            case ConnectionState.ShuttingDown:
                _state = next;
                Shutdown(previous, reason);
                break;
            case ConnectionState.Closed:
                // Both pumps can end on their own (the peer closed, then the output completed). The one way out
                // still runs, so that every close is logged and counted alike.
                MoveTo(ConnectionState.ShuttingDown);
                _state = next;
                Close();
                break;
        }
    }

    /// <summary>
    /// The one way out (<see cref="MoveTo"/> ShuttingDown). With no <paramref name="reason"/> the end is graceful:
    /// what was sent stays sent and the peer gets a FIN. With a reason (an abort or an error) the peer gets a reset
    /// (SO_LINGER 0 and the close), as on Kestrel's socket transport, and unsent bytes are dropped. Then both pumps
    /// are woken to end; the descriptor closes when they have (<see cref="Close"/>).
    /// </summary>
    private void Shutdown(ConnectionState previous, Exception? reason)
    {
        _shutdownReason = reason;
        if (reason is null && previous == ConnectionState.OutputShutDown)
        {
            // The FIN went out when the output completed; the peer has nothing more to hear. The result is not
            // needed: ENOTCONN (the peer has gone) leaves nothing to end, and the close follows either way.
            _ = Syscalls.Shutdown(Socket, LibC.SHUT_RD);
        }
        else if (reason is null)
        {
            // shutdown(2) sends the FIN now (if the output has not sent it already) and ends the reading. The
            // result is not needed: ENOTCONN (the peer has gone) leaves nothing to end, and the close follows.
            _ = Syscalls.Shutdown(Socket, LibC.SHUT_RDWR);
            Log.ConnectionWriteFin(Logger, ConnectionId, "the connection was closed gracefully");
        }
        else
        {
            // No shutdown(2): it would send a FIN ahead of the reset. The reset goes out with the close. Should
            // SO_LINGER fail (it cannot on a TCP socket we hold; a Unix socket has no reset), the close sends a FIN:
            // the peer still sees the end, only less abruptly, so the result is not acted on.
            _ = Syscalls.SetResetOnClose(Socket);
            Log.ConnectionWriteRst(Logger, ConnectionId, reason.Message);
        }
        if (previous == ConnectionState.Created)
        {
            // Never registered, no pump: nothing to wait for but the ConnectionClosed token.
            _ = CloseWhenPumpsEndAsync(Task.CompletedTask, Task.CompletedTask);
            return;
        }
        _output.Reader.CancelPendingRead();
        _input.Writer.CancelPendingFlush();
        Readiness.Cancel(); // This runs the pumps' continuations inline, which must see the state above.
        RaiseShuttingDown(); // Last: a holder of the socket may be waiting on another connection's edge.
    }

    /// <summary>Both pumps have ended (or never started): close the descriptor (<see cref="MoveTo"/> Closed, so once).</summary>
    private void Close()
    {
        DisposeSocketView();
        if (_registered)
        {
            Loop.Unregister(Socket);
        }
        Socket.Dispose();
        Metrics.ConnectionClosed(_listenEndPoint);
        _closed.TrySetResult();
    }

    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _originalTransport.Input.Complete();
        _originalTransport.Output.Complete();
        RunOnLoop(static connection =>
        {
            switch (connection._state)
            {
                case ConnectionState.Created or ConnectionState.OutputShutDown:
                    connection.MoveTo(ConnectionState.ShuttingDown);
                    break;
                case ConnectionState.Open:
                    // Kestrel is done with the connection. The send pump still sends what was written (the
                    // output is complete now, so it ends soon); once it has, nothing more is wanted from the peer.
                    connection.MoveTo(ConnectionState.Draining);
                    break;
            }
        });
        try
        {
            await _closed.Task.ConfigureAwait(false);
        }
        finally
        {
            _connectionClosed.Dispose();
        }
    }

    /// <summary>Runs <paramref name="action"/> on the loop thread: at once when already there, else queued in order.</summary>
    private void RunOnLoop(Action<SpliceConnection> action)
    {
        if (Loop.IsOnLoopThread)
        {
            action(this);
            return;
        }
        Loop.Schedule(static state =>
        {
            var (connection, action) = ((SpliceConnection, Action<SpliceConnection>))state!;
            action(connection);
        }, (this, action));
    }

    private void RunOnLoop<T>(Action<SpliceConnection, T> action, T argument)
    {
        if (Loop.IsOnLoopThread)
        {
            action(this, argument);
            return;
        }
        Loop.Schedule(static state =>
        {
            var (connection, action, argument) = ((SpliceConnection, Action<SpliceConnection, T>, T))state!;
            action(connection, argument);
        }, (this, action, argument));
    }
}
