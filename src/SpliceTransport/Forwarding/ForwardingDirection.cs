using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Transport;
using SpliceTransport.Splice;

namespace SpliceTransport.Forwarding;

/// <summary>
/// One direction of a forwarded pair whose two connections are SpliceTransport's, on one loop, with their pipes
/// still their own: the source socket's bytes go to the destination socket without the connections' pipes, by
/// splice(2) through a kernel pipe (a stream) or by recv and sendmsg through one 16 KiB buffer (an exchange of
/// small messages, where a pipe saves nothing). Everything after the takeover runs on the loop thread.
///
/// The takeover, in order: pause the source's receive pump; move what it had already received (the input pipe)
/// to the destination's output and flush it, so those bytes go first; pause the destination's send pump, which
/// completes once they have reached the kernel. Then the sockets are this direction's until it resumes both
/// pumps, which it always does, with the failure it met if any (see <see cref="ISocketHandoffFeature"/>).
///
/// Invariants (the design note's I1–I4, acln0/zerocopy's and Go's rules):
/// <list type="bullet">
/// <item>Only EAGAIN says a socket is empty or full. A fill that takes less than the pipe holds proves nothing
/// (a pipe slot per packet fragment), so the pipe is drained and filled again until the fill says EAGAIN.</item>
/// <item>Bytes in hand (in the pipe, or the buffer) are waited with only on the destination's writability; the
/// source's readability is waited on only with nothing in hand, and with no pipe rented, so an idle direction
/// holds no pipe and no buffer.</item>
/// <item>Every byte taken off the source reaches the destination's socket or, when the direction stops early
/// (cancellation, a graceful shutdown), the destination's output pipe, in order. A dead destination loses them,
/// as TCP would.</item>
/// <item>Only an empty pipe goes back to the pool (the pool closes any other).</item>
/// </list>
/// </summary>
internal sealed class ForwardingDirection
{
    /// <summary>
    /// The copy buffer: 16 KiB, HAProxy's default bufsize. A recv that fills it marks the source as a streamer
    /// (HAProxy's splice-auto rule): from then on the direction splices.
    /// </summary>
    internal const int CopyBufferSize = 16 * 1024;

    /// <summary>
    /// A transfer of at most half the copy buffer is small: for bytes that few, a splice in and a splice out cost
    /// the same two system calls as recv and sendmsg, plus a pipe.
    /// </summary>
    private const int SmallTransferSize = CopyBufferSize / 2;

    /// <summary>Small splices in a row after which splice-auto copies again: the stream has become an exchange.</summary>
    private const int SmallTransfersBeforeCopying = 3;

    /// <summary>
    /// The bytes one loop turn may move before the direction yields to the loop's other connections, as the send
    /// pump's FileBytesPerTurn: a loopback socket takes megabytes without EAGAIN, so without a budget one busy
    /// forward could hold the loop.
    /// </summary>
    private const long BytesPerTurn = 4 * 1024 * 1024;

    /// <summary>How much of a stopped transfer's pipe is read into the destination's output at once.</summary>
    private const int LeftoverChunkSize = 64 * 1024;

    private readonly ConnectionContext _sourceConnection;
    private readonly ConnectionContext _destinationConnection;
    private readonly ISocketHandoffFeature _source;
    private readonly ISocketHandoffFeature _destination;
    private readonly ForwardSpliceMode _mode;
    private readonly CaptureWriter? _capture;
    private readonly CancellationToken _cancellationToken;
    private readonly TaskCompletionSource<ForwardDirectionResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private SplicePipe? _pipe;
    private byte[]? _buffer;

    /// <summary>The bytes of <see cref="_buffer"/> received and not yet sent: [<see cref="_pendingStart"/>, <see cref="_pendingEnd"/>).</summary>
    private int _pendingStart;
    private int _pendingEnd;

    /// <summary>Splicing (a stream) rather than copying (an exchange); see <see cref="ForwardSpliceMode"/>.</summary>
    private bool _splicing;

    /// <summary>splice said EINVAL for these sockets: copy for good.</summary>
    private bool _spliceUnsupported;

    /// <summary>The pool refused a pipe: copy until the source is empty, then ask again (never retry in a loop).</summary>
    private bool _copyUntilSourceEmpty;

    private int _smallTransfers;
    private long _turnBytes;
    private long _copied;
    private long _spliced;
    private long _reportedCopied;
    private long _reportedSpliced;
    private string? _fallbackReason;

    /// <summary>Runs on the loop when either connection starts shutting down (see <see cref="ISocketHandoffFeature.ShuttingDown"/>).</summary>
    private readonly Action _wakeOnShutdown;

    /// <summary>The failure that ended the direction (<see cref="Ending.SourceFailed"/>, <see cref="Ending.DestinationFailed"/>).</summary>
    private SocketFailure? _failure;

    public ForwardingDirection(ConnectionContext source, ISocketHandoffFeature sourceSocket, ConnectionContext destination, ISocketHandoffFeature destinationSocket,
        ForwardSpliceMode mode, CaptureWriter? capture, CancellationToken cancellationToken)
    {
        _wakeOnShutdown = WakeWaits;
        _sourceConnection = source;
        _destinationConnection = destination;
        _source = sourceSocket;
        _destination = destinationSocket;
        _mode = mode;
        _capture = capture;
        _cancellationToken = cancellationToken;
    }

    private enum Ending
    {
        /// <summary>The source sent its FIN (a fill or recv said 0): all its bytes have left.</summary>
        Fin,

        /// <summary>A fill or recv on the source failed (<see cref="_failure"/>): a reset, usually.</summary>
        SourceFailed,

        /// <summary>The source connection is shutting down (aborted, or reset through the other direction).</summary>
        SourceShutDown,

        /// <summary>A drain or send to the destination failed (<see cref="_failure"/>): it is gone.</summary>
        DestinationFailed,

        /// <summary>The destination connection is shutting down.</summary>
        DestinationShutDown,

        /// <summary>The caller's token was cancelled.</summary>
        Cancelled,
    }

    /// <summary>
    /// Forwards until the direction ends. The task completes on the thread pool, never inline on the loop: the
    /// caller's code after the await must not run on a loop thread.
    /// </summary>
    public Task<ForwardDirectionResult> RunAsync()
    {
        _ = RunCoreAsync();
        return _completion.Task;
    }

    private async Task RunCoreAsync()
    {
        try
        {
            _completion.TrySetResult(await ForwardAsync().ConfigureAwait(false));
        }
        catch (OperationCanceledException ex) when (_cancellationToken.IsCancellationRequested && ex is not ConnectionAbortedException)
        {
            _completion.TrySetCanceled(ex.CancellationToken);
        }
        catch (Exception ex)
        {
            _completion.TrySetException(ex);
        }
    }

    private async Task<ForwardDirectionResult> ForwardAsync()
    {
        if (!await _source.PauseReceivingAsync(_cancellationToken).ConfigureAwait(false))
        {
            // Receiving has ended: the input pipe holds everything the source will send.
            return await ConnectionForwardingExtensions.CopyAsync(_sourceConnection, _destinationConnection, ForwardFallbackReasons.ReceiveEnded, _capture, _cancellationToken).ConfigureAwait(false);
        }
        bool receivingPaused = true;
        bool sendingPaused = false;
        try
        {
            PipeWriter output = _destinationConnection.Transport.Output;
            ForwardEnd? prefixEnd;
            try
            {
                prefixEnd = TakeBufferedInput(output);
            }
            catch (Exception ex) when (ex is IOException or ConnectionAbortedException)
            {
                // The pump had completed the input with an error before it parked (a reset, an abort): so is the
                // destination, as when the error comes later.
                ConnectionForwardingExtensions.ResetForwarded(_source.ConnectionId, _destinationConnection, ex);
                return Result(ForwardEnd.Reset);
            }
            if (prefixEnd is ForwardEnd end)
            {
                return await EndBeforeTakeoverAsync(end, output).ConfigureAwait(false);
            }
            // Always: whatever the application wrote to the destination before forwarding (a greeting, a
            // "200 Connection established") must leave before the first spliced byte.
            if ((await output.FlushAsync(_cancellationToken).ConfigureAwait(false)).IsCompleted)
            {
                return Result(ForwardEnd.DestinationClosed);
            }
            if (!await _destination.PauseSendingAsync(_cancellationToken).ConfigureAwait(false))
            {
                return Result(ForwardEnd.DestinationClosed);
            }
            sendingPaused = true;

            using CancellationTokenRegistration wake = _cancellationToken.UnsafeRegister(static state => ((ForwardingDirection)state!).WakeOnLoop(), this);
            await _source.Loop.Yield(); // From here on, the loop thread: every wait below continues there.
            // A shutdown of either connection wakes this direction, whichever edge it waits on: a connection
            // cancels only its own edges, and this direction may be waiting on the other one's.
            _source.ShuttingDown += _wakeOnShutdown;
            _destination.ShuttingDown += _wakeOnShutdown;
            Ending ending;
            try
            {
                ending = await MoveAsync();
            }
            catch (Exception ex)
            {
                // A fault of ours (not the peers'): the bytes in hand cannot be delivered in order, so neither
                // connection may go on as if nothing happened.
                var abort = new ConnectionAbortedException($"Forwarding from connection {_source.ConnectionId} failed.", ex);
                _destinationConnection.Abort(abort);
                _sourceConnection.Abort(abort);
                throw;
            }
            finally
            {
                _source.ShuttingDown -= _wakeOnShutdown;
                _destination.ShuttingDown -= _wakeOnShutdown;
            }
            receivingPaused = sendingPaused = false;
            return Finish(ending, output);
        }
        finally
        {
            if (sendingPaused)
            {
                _destination.ResumeSending();
            }
            if (receivingPaused)
            {
                _source.ResumeReceiving();
            }
            _pendingStart = _pendingEnd; // Whatever is still in hand is lost with the direction.
            ReleaseBuffer();
            ReturnPipe();
            ReportBytes();
        }
    }

    /// <summary>
    /// What the source's pump received before the pause goes first, copied to the destination's output (and the
    /// capture). The pump is paused, so one read takes it all. Returns the end when the input had already ended.
    /// </summary>
    private ForwardEnd? TakeBufferedInput(PipeWriter output)
    {
        PipeReader input = _sourceConnection.Transport.Input;
        if (!input.TryRead(out ReadResult read))
        {
            return null;
        }
        foreach (ReadOnlyMemory<byte> segment in read.Buffer)
        {
            output.Write(segment.Span);
            _capture?.Write(segment.Span);
        }
        _copied += read.Buffer.Length;
        input.AdvanceTo(read.Buffer.End);
        return read.IsCompleted ? ForwardEnd.Fin : null;
    }

    /// <summary>The source's input had ended before the takeover (the application completed it): a FIN after the bytes.</summary>
    private async Task<ForwardDirectionResult> EndBeforeTakeoverAsync(ForwardEnd end, PipeWriter output)
    {
        await output.CompleteAsync().ConfigureAwait(false);
        return Result(end);
    }

    /// <summary>The machine: fill and drain (or receive and send) until an ending. Loop thread.</summary>
    private async Task<Ending> MoveAsync()
    {
        ReadinessEdge readable = _source.Readiness.Readable;
        _splicing = _mode == ForwardSpliceMode.Always;
        while (true)
        {
            if (Stopped() is Ending stopped)
            {
                return stopped;
            }
            int seen = readable.Observe();
            int moved;
            if (_splicing && !_copyUntilSourceEmpty && (_pipe ??= RentPipe()) is { } pipe)
            {
                TransferResult fill = pipe.FillFrom(_source.Socket, null, int.MaxValue);
                switch (fill.Status)
                {
                    case TransferStatus.WouldBlock:
                        ReturnPipe(); // Idle: hold no pipe while the source is quiet.
                        await WaitForSourceAsync(readable, seen);
                        continue;
                    case TransferStatus.EndOfSource:
                        return Ending.Fin;
                    case TransferStatus.Unsupported:
                        // EINVAL before a byte moved (Go's and HAProxy's rule): these sockets cannot splice. Copy for good.
                        ReturnPipe();
                        StopSplicing(ForwardFallbackReasons.SpliceUnsupported);
                        continue;
                    case TransferStatus.Failed:
                        _failure = new SocketFailure("splice", SyscallResult.Failure(fill.Errno));
                        return Ending.SourceFailed;
                }
                moved = fill.Moved;
                // Before any drain: the pipe holds exactly this fill, so the capture gets exactly these bytes.
                _capture?.Tee(pipe, moved);
                if (await DrainPipeAsync() is Ending drainEnding)
                {
                    return drainEnding;
                }
                CountTransferSize(moved);
            }
            else
            {
                _buffer ??= ArrayPool<byte>.Shared.Rent(CopyBufferSize);
                SyscallResult received = _source.Syscalls.Receive(_source.Socket, _buffer.AsSpan(0, CopyBufferSize));
                if (received.WouldBlock)
                {
                    ReleaseBuffer();
                    await WaitForSourceAsync(readable, seen);
                    continue;
                }
                if (!received.IsSuccess)
                {
                    _failure = new SocketFailure("recv", received);
                    return Ending.SourceFailed;
                }
                if (received.Count == 0)
                {
                    return Ending.Fin;
                }
                moved = (int)received.Count;
                _capture?.Write(_buffer.AsSpan(0, moved));
                _pendingStart = 0;
                _pendingEnd = moved;
                if (await SendPendingAsync() is Ending sendEnding)
                {
                    return sendEnding;
                }
                if (moved == CopyBufferSize)
                {
                    // A read filled the buffer: a stream, which splice-auto splices from now on.
                    _splicing |= _mode == ForwardSpliceMode.Auto && !_spliceUnsupported;
                }
                else if (!_source.Readiness.ReceiveEnded)
                {
                    // A short read on a stream socket took all that was queued; more raises a new edge after
                    // `seen`. (Not after a FIN or reset: epoll reported those once, so read on to 0 or an error.)
                    ReleaseBuffer();
                    await WaitForSourceAsync(readable, seen);
                    continue;
                }
            }
            if ((_turnBytes += moved) >= BytesPerTurn)
            {
                _turnBytes = 0;
                ReportBytes();
                await _source.Loop.Yield();
            }
        }
    }

    /// <summary>
    /// Splices the pipe's bytes to the destination until the pipe is empty. EAGAIN here means the destination is
    /// full (every call is made with bytes in the pipe): wait for its writability, and for nothing else.
    /// </summary>
    private async ValueTask<Ending?> DrainPipeAsync()
    {
        SplicePipe pipe = _pipe!;
        ReadinessEdge writable = _destination.Readiness.Writable;
        while (!pipe.IsEmpty)
        {
            int seen = writable.Observe();
            TransferResult drain = pipe.DrainTo(_destination.Socket, null);
            _spliced += drain.Moved;
            switch (drain.Status)
            {
                case TransferStatus.WouldBlock:
                    // The source is not read again before the pipe is empty: its arriving packets need not wake
                    // the loop meanwhile (on a stream, most of the wake-ups otherwise). On again at its next EAGAIN.
                    _source.WatchReadable(false);
                    await writable.WaitAsync(seen);
                    if (Stopped() is Ending stopped)
                    {
                        return stopped;
                    }
                    break;
                case TransferStatus.Unsupported:
                    // Not seen for a socket; if a kernel says it, the bytes already in the pipe are copied out.
                    StopSplicing(ForwardFallbackReasons.SpliceUnsupported);
                    if (await SendPipeByCopyAsync(pipe) is Ending copyEnding)
                    {
                        return copyEnding;
                    }
                    ReturnPipe();
                    return null;
                case TransferStatus.Failed:
                    _failure = new SocketFailure("splice", SyscallResult.Failure(drain.Errno));
                    return Ending.DestinationFailed;
            }
        }
        return null;
    }

    /// <summary>The bytes of a pipe that cannot be spliced out, read into the buffer and sent from there.</summary>
    private async ValueTask<Ending?> SendPipeByCopyAsync(SplicePipe pipe)
    {
        _buffer ??= ArrayPool<byte>.Shared.Rent(CopyBufferSize);
        while (!pipe.IsEmpty)
        {
            _pendingStart = 0;
            _pendingEnd = (int)pipe.ReadInto(_buffer.AsSpan(0, CopyBufferSize)).CountOrThrow("read", "a splice pipe");
            if (await SendPendingAsync() is Ending ending)
            {
                return ending;
            }
        }
        return null;
    }

    /// <summary>Sends the buffer's pending bytes, waiting for the destination's writability only.</summary>
    private async ValueTask<Ending?> SendPendingAsync()
    {
        ReadinessEdge writable = _destination.Readiness.Writable;
        while (_pendingStart < _pendingEnd)
        {
            int seen = writable.Observe();
            SyscallResult sent = SendPending();
            if (sent.WouldBlock)
            {
                await writable.WaitAsync(seen);
                if (Stopped() is Ending stopped)
                {
                    return stopped;
                }
                continue;
            }
            if (!sent.IsSuccess)
            {
                _failure = new SocketFailure("sendmsg", sent);
                return Ending.DestinationFailed;
            }
            // A short count is not taken for a full socket; only EAGAIN says that (see SendPump.SendAsync).
            _pendingStart += (int)sent.Count;
            _copied += sent.Count;
        }
        return null;
    }

    private unsafe SyscallResult SendPending()
    {
        fixed (byte* bytes = &_buffer![_pendingStart])
        {
            LibC.IOVector vector = new() { Base = bytes, Length = (nuint)(_pendingEnd - _pendingStart) };
            return _destination.Syscalls.SendMessage(_destination.Socket, &vector, 1, 0);
        }
    }

    /// <summary>Waits for the source's next edge with nothing in hand; the counts go to the metrics first.</summary>
    private ReadinessEdge.EdgeAwaiter WaitForSourceAsync(ReadinessEdge readable, int seen)
    {
        // After the call that said EAGAIN: data that came since is reported by the change itself, as an edge after `seen`.
        _source.WatchReadable(true);
        _copyUntilSourceEmpty = false; // The source is empty: the next transfer may ask the pool again.
        _turnBytes = 0;
        ReportBytes();
        return readable.WaitAsync(seen);
    }

    /// <summary>splice-auto: after <see cref="SmallTransfersBeforeCopying"/> small splices in a row, copy again.</summary>
    private void CountTransferSize(int moved)
    {
        if (moved > SmallTransferSize)
        {
            _smallTransfers = 0;
        }
        else if (++_smallTransfers >= SmallTransfersBeforeCopying && _mode == ForwardSpliceMode.Auto)
        {
            _smallTransfers = 0;
            _splicing = false;
            ReturnPipe();
        }
    }

    /// <summary>Why to stop now, if anything: checked at the top of each transfer and after each wait.</summary>
    private Ending? Stopped() =>
        _cancellationToken.IsCancellationRequested ? Ending.Cancelled
        : _destination.IsShuttingDown ? Ending.DestinationShutDown
        : _source.IsShuttingDown ? Ending.SourceShutDown
        : null;

    /// <summary>
    /// The token was cancelled: wake the waits of this direction on the loop (a spurious edge is harmless: a
    /// waiter only ever retries its call), so that it sees the token at once.
    /// </summary>
    private void WakeOnLoop() => _source.Loop.Schedule(static state => ((ForwardingDirection)state!).WakeWaits(), this);

    /// <summary>Signals the two edges this direction may wait on. Loop thread.</summary>
    private void WakeWaits()
    {
        _source.Readiness.Readable.Signal();
        _destination.Readiness.Writable.Signal();
    }

    /// <summary>
    /// Gives both sockets back, each pump told what this direction met, and says how the direction ended. Loop
    /// thread. Aborting a connection here may run the other direction's ending inline (the abort wakes its
    /// waits); nothing of this direction is left to change by then.
    /// </summary>
    private ForwardDirectionResult Finish(Ending ending, PipeWriter output)
    {
        SocketFailure? sourceFailure = null;
        SocketFailure? destinationFailure = null;
        bool destinationResumed = false;
        try
        {
            switch (ending)
            {
                case Ending.Fin:
                case Ending.SourceShutDown when _source.ShutdownReason is null:
                    // The send pump, resumed, sends what is left and then the FIN: shutdown(SHUT_WR) through the
                    // destination's one way out, while the other direction goes on (a half-close).
                    _destination.ResumeSending();
                    destinationResumed = true;
                    MoveLeftoversTo(output);
                    output.Complete();
                    return Result(ForwardEnd.Fin);
                case Ending.SourceFailed:
                case Ending.SourceShutDown:
                    // Reset or aborted: so is the destination, as TCP would tell a peer whose bytes were lost. The
                    // source's pump ends with the failure (a socket reports a reset once: it could not learn it again).
                    Exception reason = _failure is { } failure
                        ? new ConnectionResetException($"The forwarded connection {_source.ConnectionId} failed: {failure}.", failure.Result.ToException(failure.Syscall))
                        : _source.ShutdownReason!;
                    sourceFailure = _failure;
                    ConnectionForwardingExtensions.ResetForwarded(_source.ConnectionId, _destinationConnection, reason);
                    return Result(ForwardEnd.Reset);
                case Ending.DestinationFailed:
                case Ending.DestinationShutDown:
                    // The bytes in hand are lost with the destination, which the resumed pump resets (or has).
                    destinationFailure = _failure;
                    return Result(ForwardEnd.DestinationClosed);
                default:
                    // Cancelled: both connections stay usable. The bytes in hand go to the destination's output,
                    // ahead of whatever the caller writes next; the flush is not awaited, so a destination that does
                    // not read cannot hold the cancellation up (the caller's next flush waits for them instead).
                    _destination.ResumeSending();
                    destinationResumed = true;
                    MoveLeftoversTo(output);
                    _ = output.FlushAsync(CancellationToken.None);
                    throw new OperationCanceledException(_cancellationToken);
            }
        }
        finally
        {
            // Both pumps get their sockets back whatever happened above, each with what this direction met on it.
            if (!destinationResumed)
            {
                _destination.ResumeSending(destinationFailure);
            }
            _source.ResumeReceiving(sourceFailure);
        }
    }

    /// <summary>The bytes taken off the source and not yet sent, into <paramref name="output"/>, in order.</summary>
    private void MoveLeftoversTo(PipeWriter output)
    {
        if (_pendingStart < _pendingEnd)
        {
            output.Write(_buffer.AsSpan(_pendingStart, _pendingEnd - _pendingStart));
            _copied += _pendingEnd - _pendingStart;
            _pendingStart = _pendingEnd;
        }
        while (_pipe is { IsEmpty: false } pipe)
        {
            Span<byte> span = output.GetSpan(Math.Min(pipe.Buffered, LeftoverChunkSize));
            long read = pipe.ReadInto(span).CountOrThrow("read", "a splice pipe");
            output.Advance((int)read);
            _copied += read;
        }
    }

    private SplicePipe? RentPipe()
    {
        if (_source.Pipes.TryRent(out SplicePipe? pipe, out PipeRefusal refusal))
        {
            return pipe;
        }
        // Counted by the pool under splice.pipe.refused. Copy this round; ask again after the next EAGAIN.
        RecordFallback(refusal.Reason);
        _copyUntilSourceEmpty = true;
        return null;
    }

    private void ReturnPipe()
    {
        if (_pipe is { } pipe)
        {
            _pipe = null;
            _source.Pipes.Return(pipe); // Closed, not pooled, if it still holds bytes.
        }
    }

    private void ReleaseBuffer()
    {
        if (_buffer is { } buffer && _pendingStart == _pendingEnd)
        {
            _buffer = null;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void StopSplicing(string reason)
    {
        _spliceUnsupported = true;
        _splicing = false;
        RecordFallback(reason);
    }

    /// <summary>The first reason this direction copied what it could have spliced: reported, and counted once.</summary>
    private void RecordFallback(string reason)
    {
        if (_fallbackReason is null)
        {
            _fallbackReason = reason;
            _source.Metrics.ForwardFellBack(reason);
        }
    }

    /// <summary>Adds what moved since the last report to splice.forward.bytes (at waits and at the end, not per call).</summary>
    private void ReportBytes()
    {
        _source.Metrics.Forwarded(_spliced - _reportedSpliced, spliced: true);
        _source.Metrics.Forwarded(_copied - _reportedCopied, spliced: false);
        _reportedSpliced = _spliced;
        _reportedCopied = _copied;
    }

    private ForwardDirectionResult Result(ForwardEnd end) => new(_copied + _spliced, _spliced, end, _fallbackReason);
}
