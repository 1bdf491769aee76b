using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// One accepted socket: its pipes, its two pumps, and its life from accept to close.
///
/// Threads: Kestrel uses the pipes from any thread. The receive pump and the connection's life-cycle
/// (register, shutdown, close) run on <see cref="Loop"/>; calls from outside (abort, dispose) are scheduled
/// onto it. The send pump is one logical thread that runs on the thread that flushed until it must wait
/// for the socket, then on the loop; the descriptor is reference-counted, so it cannot be closed under it.
/// Life: the pumps start on the loop; the send pump ends when Kestrel completes the output (FIN, with
/// the receive side left open: half-close) or on an error or abort; the receive pump ends at the peer's
/// FIN, an error, or when the connection closes. When both have ended the descriptor is closed, on the loop.
/// </summary>
internal sealed partial class SpliceConnection : ConnectionContext
{
    private readonly SpliceTransportContext _context;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly SpliceOutputWriter _outputWriter;
    private readonly IDuplexPipe _originalTransport;
    private readonly ReceivePump _receivePump;
    private readonly SendPump _sendPump;
    private readonly CancellationTokenSource _connectionClosed = new();
    private readonly EndPoint _localTemplate;
    private EndPoint? _localEndPoint;
    private Task _processing = Task.CompletedTask;
    private IDuplexPipe _transport;
    private IDictionary<object, object?>? _items;
    private Exception? _abortReason;
    private volatile bool _closing;
    private bool _sendPumpDone;
    private bool _disposeRequested;
    private int _disposed;

    public SpliceConnection(FileDescriptorHandle socket, EventLoop loop, SpliceTransportContext context, EndPoint localTemplate, EndPoint? remoteEndPoint)
    {
        Socket = socket;
        Loop = loop;
        _context = context;
        _localTemplate = localTemplate;
        RemoteEndPoint = remoteEndPoint;
        IsTcp = localTemplate is IPEndPoint;
        ConnectionId = ConnectionIds.Next();
        Readiness = new SocketReadiness(loop);

        SpliceTransportOptions options = context.Options;
        long maxRead = options.MaxReadBufferSize ?? 0;
        long maxWrite = options.MaxWriteBufferSize ?? 0;
        int minimumSegmentSize = MinimumSegmentSize(context.MemoryPool);
        _input = new Pipe(new PipeOptions(context.MemoryPool, readerScheduler: context.ApplicationScheduler, writerScheduler: loop,
            pauseWriterThreshold: maxRead, resumeWriterThreshold: maxRead / 2, minimumSegmentSize: minimumSegmentSize, useSynchronizationContext: false));
        // The send pump continues on the thread that flushed, once that thread has finished what it is doing
        // (see SendScheduler); it moves to the loop thread only when it must wait for the socket to drain.
        _output = new Pipe(new PipeOptions(context.MemoryPool, readerScheduler: loop.SendScheduler, writerScheduler: context.ApplicationScheduler,
            pauseWriterThreshold: maxWrite, resumeWriterThreshold: maxWrite / 2, minimumSegmentSize: minimumSegmentSize, useSynchronizationContext: false));
        _outputWriter = new SpliceOutputWriter(_output.Writer, _output.Reader);
        _originalTransport = new DuplexPipe(_input.Reader, _outputWriter);
        _transport = _originalTransport;
        _receivePump = new ReceivePump(this, _input.Writer);
        _sendPump = new SendPump(this, _output.Reader, _outputWriter, options.MaxSendFileChunkSize);
    }

    /// <summary>The connected, non-blocking socket.</summary>
    public FileDescriptorHandle Socket { get; }

    /// <summary>The loop that owns the socket.</summary>
    public EventLoop Loop { get; }

    public SocketReadiness Readiness { get; }

    public Microsoft.Extensions.Logging.ILogger Logger => _context.Logger;

    public SpliceTransportOptions Options => _context.Options;

    public SpliceMetrics Metrics => _context.Metrics;

    /// <summary>TCP (rather than a Unix socket): TCP options such as TCP_NODELAY apply.</summary>
    public bool IsTcp { get; }

    /// <summary>Why the connection was aborted, once it was; the input completes with it.</summary>
    public Exception? AbortReason => _abortReason;

    /// <summary>True once the connection is going down: the pumps stop at their next step. Loop thread only.</summary>
    public bool IsClosing => _closing;

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

    public override EndPoint? LocalEndPoint
    {
        get => _localEndPoint ??= SocketAddresses.GetLocal(Socket, _localTemplate);
        set => _localEndPoint = value;
    }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>Registers the socket and starts both pumps. Loop thread only.</summary>
    public void StartOnLoop()
    {
        try
        {
            Loop.Register(Socket, Readiness);
        }
        catch (Exception ex)
        {
            Log.ConnectionError(Logger, ConnectionId, ex);
            _abortReason = new ConnectionAbortedException("The connection could not be registered with its event loop.", ex);
            _closing = true;
            Readiness.Cancel();
        }
        Task receiving = _receivePump.RunAsync();
        Task sending = _sendPump.RunAsync();
        _processing = WhenPumpsDoneAsync(receiving, sending);
    }

    private async Task WhenPumpsDoneAsync(Task receiving, Task sending)
    {
        await receiving.ConfigureAwait(false);
        Task closedFired = FireConnectionClosedAsync();
        await sending.ConfigureAwait(false);
        await closedFired.ConfigureAwait(false);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Loop.Schedule(static state =>
        {
            var (connection, done) = ((SpliceConnection, TaskCompletionSource))state!;
            connection.CloseSocketOnLoop();
            done.SetResult();
        }, (this, closed));
        await closed.Task.ConfigureAwait(false);
    }

    private void CloseSocketOnLoop()
    {
        // Aborts and disposals scheduled from now on find the connection closed and touch nothing.
        _closing = true;
        Loop.Unregister(Socket);
        Socket.Dispose();
        Metrics.ConnectionClosed(_localTemplate);
    }

    /// <summary>
    /// Kestrel's RequestAborted follows this token. Like Kestrel's socket transport, it fires when the
    /// receive side ends (FIN, reset or abort), on the thread pool so that no callback runs on the loop.
    /// The processing task waits for it, so the token source is not disposed before it has fired.
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

    /// <summary>Called by the send pump as it ends, on whatever thread it ran last; the work moves to the loop.</summary>
    public void OnSendPumpCompleted(bool graceful, Exception? error)
    {
        if (!Loop.IsOnLoopThread)
        {
            Loop.Schedule(static state =>
            {
                var (connection, graceful, error) = ((SpliceConnection, bool, Exception?))state!;
                connection.OnSendPumpCompleted(graceful, error);
            }, (this, graceful, error));
            return;
        }
        _sendPumpDone = true;
        if (graceful && !_closing && !_disposeRequested)
        {
            // FIN now; keep reading until the peer closes too, or the connection is disposed.
            LibC.shutdown(Socket, LibC.SHUT_WR);
            return;
        }
        if (!graceful)
        {
            _abortReason ??= error as ConnectionAbortedException
                ?? new ConnectionAbortedException(error?.Message ?? "The connection's send side ended.", error!);
        }
        CloseOnLoop(LibC.SHUT_RDWR);
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        abortReason ??= new ConnectionAbortedException("The connection was aborted.");
        Loop.Schedule(static state =>
        {
            var (connection, reason) = ((SpliceConnection, ConnectionAbortedException))state!;
            if (!connection._closing)
            {
                connection._abortReason ??= reason;
                Log.ConnectionAborted(connection.Logger, connection.ConnectionId, reason.Message);
                connection.CloseOnLoop(LibC.SHUT_RDWR);
            }
        }, (this, abortReason));
    }

    /// <summary>Shuts the socket down and wakes both pumps so that they end. Loop thread only.</summary>
    private void CloseOnLoop(int shutdownHow)
    {
        if (_closing)
        {
            return;
        }
        _closing = true;
        // The descriptor stays open (and so not reusable) until both pumps are done; shutdown only stops traffic.
        LibC.shutdown(Socket, shutdownHow);
        _output.Reader.CancelPendingRead();
        _input.Writer.CancelPendingFlush();
        Readiness.Cancel(); // Last: this runs the pumps' continuations inline, which must see the state above.
    }

    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _originalTransport.Input.Complete();
        _originalTransport.Output.Complete();
        Loop.Schedule(static state =>
        {
            var connection = (SpliceConnection)state!;
            connection._disposeRequested = true;
            // Kestrel is done with the connection. The send pump still sends what was written; once it has,
            // nothing more is wanted from the peer.
            if (connection._sendPumpDone)
            {
                connection.CloseOnLoop(LibC.SHUT_RDWR);
            }
        }, this);
        try
        {
            await _processing.ConfigureAwait(false);
        }
        finally
        {
            _connectionClosed.Dispose();
        }
    }

    private static int MinimumSegmentSize(MemoryPool<byte> pool) =>
        pool.MaxBufferSize is > 0 and < 4096 ? pool.MaxBufferSize : 4096;
}
