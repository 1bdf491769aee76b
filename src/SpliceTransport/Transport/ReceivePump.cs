using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Http;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// Moves bytes from the socket into the connection's input pipe, on the loop thread.
/// It waits for readability before it rents a buffer, so an idle connection holds no buffer, and it stops
/// reading while the pipe is over <c>MaxReadBufferSize</c> (its flush does not complete), which pushes
/// back on the client through TCP's own window.
/// </summary>
internal sealed class ReceivePump
{
    /// <summary>The smallest buffer worth a recv call; Kestrel's socket transport asks for the same.</summary>
    private const int MinimumBufferSize = 2048;

    private readonly SpliceConnection _connection;
    private readonly PipeWriter _input;

    /// <summary>The buffer a file write that cannot splice copies a pipe load through (see <see cref="WriteToFile"/>).</summary>
    private const int CopyOutBufferSize = 64 * 1024;

    /// <summary>Where the pump waits now; loop thread only, like the pump itself.</summary>
    private Waiting _waiting;

    /// <summary>A request body to splice into a file before reading on (see <see cref="ResumeInto"/>). Loop thread.</summary>
    private ReceiveSegment? _segment;

    /// <summary>The segment being spliced now, if any. Loop thread.</summary>
    private ReceiveSegment? _splicing;

    private enum Waiting
    {
        /// <summary>Running, or not started.</summary>
        None,

        /// <summary>For the socket's next readable edge.</summary>
        ForEdge,

        /// <summary>For the application to read the input below its limit (back-pressure).</summary>
        ForFlush,
    }

    public ReceivePump(SpliceConnection connection, PipeWriter input)
    {
        _connection = connection;
        _input = input;
    }

    /// <summary>Stops the pump for a holder of the socket (<see cref="ISocketHandoffFeature"/>).</summary>
    public PumpGate Gate { get; } = new();

    /// <summary>
    /// Asks the pump to stop before its next recv. Loop thread. A pump waiting for an edge is woken (one
    /// spurious edge: harmless, a waiter only ever retries the call) so that it parks at once and leaves the
    /// edge to the holder; an edge has one waiter. A pump waiting for the application to read will park after
    /// that, without reading, so the holder may go on now: it is usually the one about to read.
    /// </summary>
    public Task<bool> PauseOnLoop()
    {
        if (_splicing is { } segment)
        {
            // The segment's loop does not look at the gate: a holder would share the socket with it. Nothing pauses
            // a connection in the middle of an upload (its own reader waits for it), so this is a caller's mistake.
            return Task.FromException<bool>(new InvalidOperationException(
                $"The socket is splicing a request body into '{segment.Path}'; pause it after the upload has ended."));
        }
        Task<bool> stopped = Gate.RequestPause();
        switch (_waiting)
        {
            case Waiting.ForEdge:
                _connection.Readiness.Readable.Signal();
                break;
            case Waiting.ForFlush:
                Gate.ReportStopped();
                break;
        }
        return stopped;
    }

    /// <summary>
    /// Gives the socket back after a pause, with the rest of a request body to splice into a file first when
    /// <paramref name="segment"/> is given (see <see cref="ReceiveSegment"/>). Loop thread.
    /// </summary>
    public void ResumeInto(ReceiveSegment? segment)
    {
        _segment = segment;
        Gate.Resume();
        if (segment is not null && _waiting == Waiting.ForEdge)
        {
            // Not parked after all (the pause was withdrawn before it was granted): the pump waits for an edge and
            // would take the segment only after it. Wake it: an edge has one waiter, and a spurious one is harmless.
            _connection.Readiness.Readable.Signal();
        }
    }

    /// <summary>Runs until FIN, an error, the app completing the input, or the connection shutting down.</summary>
    public async Task RunAsync()
    {
        ReadinessEdge readable = _connection.Readiness.Readable;
        Exception? error = null;
        try
        {
            // No edge seen yet: the first wait lasts until the socket is readable (registration reports
            // data that is already there), so an idle connection never holds a buffer.
            int seen = 0;
            bool mayHaveMore = false;
            while (true)
            {
                if (_connection.IsShuttingDown)
                {
                    break;
                }
                // The gate before the edge, every turn: a pause granted while the pump waited for a flush
                // (PauseOnLoop) leaves the edge to the holder, who is then likely waiting on it. An edge has one
                // waiter, so a pump that went on to wait for it too would take the holder's wake-up (or lose its
                // own), and one of the two would hang.
                if (Gate.IsPauseRequested)
                {
                    if (await Gate.ParkAsync() is { } failure)
                    {
                        error = ReceiveError(failure.Result, failure.Syscall);
                        break;
                    }
                    // The holder may have taken the edge that announced what waits now (bytes, or the FIN),
                    // and no new one would come: read at once.
                    mayHaveMore = true;
                    continue;
                }
                if (_segment is { } segment)
                {
                    // Before the edge wait, as the gate: the segment's bytes may be in the socket already.
                    _segment = null;
                    _splicing = segment;
                    SegmentEnd end = await ReceiveIntoFileAsync(segment);
                    _splicing = null;
                    if (end != SegmentEnd.Continue)
                    {
                        if (end == SegmentEnd.Failed)
                        {
                            error = _segmentError;
                        }
                        break;
                    }
                    mayHaveMore = true; // The next request may have come right behind the body.
                    continue;
                }
                if (!mayHaveMore)
                {
                    _waiting = Waiting.ForEdge;
                    await readable.WaitAsync(seen);
                    _waiting = Waiting.None;
                    mayHaveMore = true;
                    continue; // A shutdown or a pause may have come with the edge.
                }

                seen = readable.Observe();
                Memory<byte> buffer = _input.GetMemory(MinimumBufferSize);
                // Here the last flush said the application still reads, so no placeholder slice can be the write
                // head (see RoomForRealBytes); checked in debug builds only, off the path every request takes.
                Debug.Assert(!ScratchMemory.Shared.Contains(buffer.Span), "The input's write head is a placeholder slice.");
                SyscallResult received = _connection.Syscalls.Receive(_connection.Socket, buffer.Span);
                if (received.WouldBlock)
                {
                    mayHaveMore = false;
                    continue;
                }
                if (!received.IsSuccess)
                {
                    error = ReceiveError(received, "recv");
                    break;
                }
                if (received.Count == 0)
                {
                    break; // FIN: the peer will send no more.
                }
                // A short read on a stream socket took everything that was queued; data arriving later
                // raises a new edge, so it counts as EAGAIN without paying for the extra call. A full buffer
                // may have left more behind. A FIN or reset that already came raises no new edge, though:
                // then read on until recv itself says 0, an error, or EAGAIN.
                mayHaveMore = received.Count == buffer.Length || _connection.Readiness.ReceiveEnded;

                _input.Advance((int)received.Count);
                _waiting = Waiting.ForFlush;
                FlushResult result = await _input.FlushAsync();
                _waiting = Waiting.None;
                if (result.IsCompleted || result.IsCanceled)
                {
                    break; // The application stopped reading, or the connection is shutting down.
                }
            }
        }
        catch (Exception ex)
        {
            error = ex;
            Log.ConnectionError(_connection.Logger, _connection.ConnectionId, ex);
        }
        finally
        {
            _waiting = Waiting.None;
            // A segment handed over as the pump ended (the connection shut down while its reader held the socket):
            // it never started, and its reader learns that from the input's end; its file is not the pump's.
            if (_segment is { } pending)
            {
                _segment = null;
                pending.End(connectionClosed: true);
            }
            Gate.End();
            // A shutdown we started is the reason the pump ended, whatever recv said after it.
            _input.Complete(_connection.ShutdownReason ?? error);
        }
    }

    private enum SegmentEnd
    {
        /// <summary>The segment is done (whole, or stopped early): read on as ever.</summary>
        Continue,

        /// <summary>The peer's FIN came before the body's end: the input completes, and Kestrel reports the short body.</summary>
        Fin,

        /// <summary>The socket failed (<see cref="_segmentError"/>): the pump ends with the error.</summary>
        Failed,

        /// <summary>The application completed the input, or the connection is shutting down.</summary>
        Stop,
    }

    /// <summary>Why the last segment ended the pump (<see cref="SegmentEnd.Failed"/>).</summary>
    private Exception? _segmentError;

    /// <summary>
    /// Splices the segment's bytes socket → kernel pipe → file, and publishes as many placeholders into the input.
    /// Runs on the loop; each file write runs on the disk threads (a write into the page cache can wait for
    /// writeback when the disk is slower than the client), and the pump comes back to the loop before its next
    /// socket call.
    ///
    /// Invariants: a fill takes at most what is left of the body, so not a byte of the next request leaves the
    /// socket; only EAGAIN from a fill says the socket is empty, and the pump waits for it with no pipe held; a
    /// pipe load is written whole before the next fill; every byte taken off the socket reaches the file (and is
    /// published as a placeholder) or the input as a real byte, in order; only an empty pipe is pooled.
    /// </summary>
    private async Task<SegmentEnd> ReceiveIntoFileAsync(ReceiveSegment segment)
    {
        ReadinessEdge readable = _connection.Readiness.Readable;
        PipePool pool = _connection.Pipes;
        SplicePipe? pipe = null;
        SegmentEnd end = SegmentEnd.Continue;
        try
        {
            while (segment.Remaining > 0)
            {
                if (_connection.IsShuttingDown)
                {
                    return end = SegmentEnd.Stop;
                }
                if (segment.IsStopRequested)
                {
                    segment.FallBack(UploadFallbackReasons.Canceled);
                    break;
                }
                int seen = readable.Observe();
                if (pipe is null)
                {
                    if (!pool.TryRent(out pipe, out PipeRefusal refusal))
                    {
                        // The rest comes through recv as real bytes, which the body's reader writes itself.
                        segment.FallBack(refusal.Reason);
                        break;
                    }
                }
                TransferResult fill = pipe.FillFrom(_connection.Socket, null, (int)Math.Min(segment.Remaining, pipe.Capacity));
                switch (fill.Status)
                {
                    case TransferStatus.WouldBlock:
                        // Empty: wait for the socket with no pipe held, so an idle upload holds none.
                        pool.Return(pipe);
                        pipe = null;
                        _waiting = Waiting.ForEdge;
                        await readable.WaitAsync(seen);
                        _waiting = Waiting.None;
                        continue;
                    case TransferStatus.EndOfSource:
                        return end = SegmentEnd.Fin;
                    case TransferStatus.Unsupported:
                        segment.FallBack(UploadFallbackReasons.SpliceUnsupported);
                        break;
                    case TransferStatus.Failed:
                        _segmentError = ReceiveError(SyscallResult.Failure(fill.Errno), "splice");
                        return end = SegmentEnd.Failed;
                }
                if (fill.Status != TransferStatus.Completed)
                {
                    break;
                }

                if (!segment.TryBeginWrite())
                {
                    // The reader stopped the segment while these bytes were on their way: they are real bytes now.
                    segment.FallBack(UploadFallbackReasons.Canceled);
                    if (!await MovePipeToInputAsync(pipe, unwritten: null))
                    {
                        return end = SegmentEnd.Stop;
                    }
                    break;
                }
                FileWrite written;
                try
                {
                    written = await WriteToFileOffLoopAsync(pipe, segment, segment.FileOffset + segment.Published);
                }
                finally
                {
                    segment.EndWrite();
                }

                if (written.Moved > 0)
                {
                    segment.Publish(written.Moved, written.Spliced);
                    if (!await PublishPlaceholdersAsync(written.Moved))
                    {
                        return end = SegmentEnd.Stop;
                    }
                }
                if (written.Failure is not null)
                {
                    // The file failed (a full disk): what the pipe still holds goes to the input as real bytes, then
                    // the rest of the body through recv, so Kestrel can drain it and keep the connection.
                    segment.FallBack(UploadFallbackReasons.FileFailed, written.Failure);
                    if (!await MovePipeToInputAsync(pipe, written.Unwritten))
                    {
                        return end = SegmentEnd.Stop;
                    }
                    break;
                }
            }
            return end;
        }
        finally
        {
            if (pipe is not null)
            {
                pool.Return(pipe); // Closed, not pooled, if it still holds bytes (a stop or failure on the way).
            }
            _waiting = Waiting.None;
            segment.End(connectionClosed: end != SegmentEnd.Continue);
        }
    }

    /// <summary>
    /// Runs a pipe load's file write on a disk thread and continues on the loop, where the socket and the input are
    /// used: the disk thread hands the result to the loop itself, so no thread-pool worker is woken in between (a
    /// hop per pipe load, and on a server given one core a worker's spin after it).
    /// </summary>
    private Task<FileWrite> WriteToFileOffLoopAsync(SplicePipe pipe, ReceiveSegment segment, long offset)
    {
        // Continuations inline: the pump goes on in the loop's work item that completes this.
        var written = new TaskCompletionSource<FileWrite>();
        EventLoop loop = _connection.Loop;
        _ = _connection.DiskThreads.RunAsync(() =>
        {
            Task<FileWrite> result;
            try
            {
                result = Task.FromResult(WriteToFile(pipe, segment, offset));
            }
            catch (Exception ex)
            {
                result = Task.FromException<FileWrite>(ex);
            }
            loop.Schedule(static state =>
            {
                var (written, result) = ((TaskCompletionSource<FileWrite>, Task<FileWrite>))state!;
                written.SetFromTask(result);
            }, (written, result));
            return true;
        });
        return written.Task;
    }

    /// <summary>
    /// What one pipe load's write to the file did: bytes written, by splice or copied, the file's error, and the bytes a
    /// failed copy had read out of the pipe but not written (they go to the input first, then the pipe's rest).
    /// </summary>
    private readonly record struct FileWrite(int Moved, bool Spliced, Exception? Failure, byte[]? Unwritten = null);

    /// <summary>
    /// Writes the whole pipe load into the file at <paramref name="offset"/>, on a disk thread. A file that cannot take
    /// a splice (EINVAL: opened with O_APPEND, or a file system without splice support) gets the bytes copied out of
    /// the pipe instead; any other error stops the write with the rest still in the pipe (or, for a copy, in
    /// <see cref="FileWrite.Unwritten"/> first).
    /// </summary>
    private static FileWrite WriteToFile(SplicePipe pipe, ReceiveSegment segment, long offset)
    {
        TransferResult drained = pipe.DrainTo(segment.File, offset);
        if (drained.Status == TransferStatus.Completed)
        {
            return new FileWrite(drained.Moved, Spliced: true, null);
        }
        if (drained.Status != TransferStatus.Unsupported)
        {
            return new FileWrite(drained.Moved, Spliced: true, new SyscallException("splice", drained.Errno, segment.Path));
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(CopyOutBufferSize);
        try
        {
            TransferResult copied = pipe.CopyOut(segment.File, offset + drained.Moved, buffer, out Range unwritten);
            segment.FallBack(UploadFallbackReasons.FileSpliceUnsupported);
            return copied.Status == TransferStatus.Completed
                ? new FileWrite(drained.Moved + copied.Moved, Spliced: false, null)
                : new FileWrite(drained.Moved + copied.Moved, Spliced: false, new SyscallException("pwrite", copied.Errno, segment.Path), buffer[unwritten]);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Writes <paramref name="count"/> zero bytes into the input and flushes them: what Kestrel counts for body bytes
    /// that went into the file. False if the application completed the input or the connection is shutting down.
    /// </summary>
    private async ValueTask<bool> PublishPlaceholdersAsync(int count)
    {
        for (int left = count; left > 0;)
        {
            // A slice of the zeroed scratch memory, as long as the pipe load (see InputMemoryPool); only room the
            // pipe's write head already had, or a count below a block, comes as a pool block.
            Span<byte> span = InputMemoryPool.GetPlaceholderSpan(_input, left, out bool zeroed);
            int length = Math.Min(left, span.Length);
            if (!zeroed)
            {
                span[..length].Clear(); // Zeros, not what the pool block last held: nothing of another request leaks.
            }
            _input.Advance(length);
            left -= length;
        }
        return await FlushInputAsync();
    }

    /// <summary>
    /// Moves what a stopped segment's pipe still holds into the input as real bytes (read(2)), in order, ahead of
    /// anything the pump reads next; <paramref name="unwritten"/>, bytes a failed copy had already taken out of the
    /// pipe, go first. False if the application completed the input or the connection is shutting down.
    /// </summary>
    private async ValueTask<bool> MovePipeToInputAsync(SplicePipe pipe, byte[]? unwritten)
    {
        for (int copied = 0; unwritten is not null && copied < unwritten.Length;)
        {
            Memory<byte> room = RoomForRealBytes(0);
            int length = Math.Min(room.Length, unwritten.Length - copied);
            unwritten.AsSpan(copied, length).CopyTo(room.Span);
            _input.Advance(length);
            copied += length;
        }
        while (!pipe.IsEmpty)
        {
            Memory<byte> buffer = RoomForRealBytes(0);
            _input.Advance((int)pipe.ReadInto(buffer.Span).CountOrThrow("read", "a request body's kernel pipe"));
        }
        return await FlushInputAsync();
    }

    /// <summary>
    /// Room in the input for bytes out of a stopped segment's pipe: a pool block, never the shared scratch memory that
    /// placeholders are slices of (see <see cref="InputMemoryPool"/>). A slice leaves no room once its placeholders are
    /// advanced, except when the application has completed the input: the pipe then ignores Advance, and the slice
    /// stays its write head. The pump stops at that flush, so this never happens; should a later path write on
    /// regardless, it fails here rather than put a connection's bytes where every upload's placeholders point. (The
    /// receive loop asserts the same in debug builds: a check there cost 11% CPU per response in an A/B, noise or
    /// not, `perf/results/ab-491e296-3ea5312-file-4KiB-c32.md`.)
    /// </summary>
    private Memory<byte> RoomForRealBytes(int sizeHint)
    {
        Memory<byte> room = _input.GetMemory(sizeHint);
        return ScratchMemory.Shared.Contains(room.Span)
            ? throw new InvalidOperationException("The input's write head is a placeholder slice of the shared scratch memory; real bytes cannot go there.")
            : room;
    }

    /// <summary>Flushes the input, waiting while the application has more than MaxRequestBufferSize unread (back-pressure).</summary>
    private async ValueTask<bool> FlushInputAsync()
    {
        _waiting = Waiting.ForFlush;
        FlushResult result = await _input.FlushAsync();
        _waiting = Waiting.None;
        return !result.IsCompleted && !result.IsCanceled;
    }

    /// <summary>
    /// The exception the input completes with when <paramref name="syscall"/> failed on the socket: the pump's own
    /// recv, or a holder's splice handed back with the socket. A reset is logged as one (event 106).
    /// </summary>
    private Exception ReceiveError(SyscallResult result, string syscall) => _connection.SocketFailure(result, syscall);
}
