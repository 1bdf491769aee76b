using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// Sends the output pipe and the queued file segments in order. It runs on the thread that flushed, after
/// that thread's current work (see <see cref="SendScheduler"/>: no other thread is woken for a response that
/// fits the socket buffer), and continues on the loop thread after a wait for writability; it is one logical
/// thread either way, so its own state needs no lock.
///
/// The output is one ordered stream: pipe bytes, with file ranges queued at pipe positions (see
/// <see cref="SpliceOutputWriter"/>). Pipe bytes leave with one sendmsg over up to <see cref="MaxIOVectors"/>
/// segments. A file queued at pipe position P is sent with sendfile(2) once exactly P pipe bytes have left,
/// and no pipe byte after P leaves before it: headers, file, next response.
///
/// MSG_MORE, in one rule: bytes that end exactly where a queued file starts are sent with MSG_MORE, so that a
/// small file leaves in the same TCP segment as its headers. The file is then always the next thing sent, and
/// its last sendfile call (or last copied chunk) goes without MORE, which pushes everything out. So nothing is
/// ever left corked, and TCP_NODELAY is never touched: the application's NoDelay setting stands.
/// </summary>
internal sealed class SendPump
{
    /// <summary>Segments per sendmsg: 64 pool blocks of 4 KiB is 256 KiB, more than a socket buffer takes at once.</summary>
    private const int MaxIOVectors = 64;

    /// <summary>
    /// The file bytes one loop turn may send before yielding to the other connections on the loop.
    /// A loopback socket takes megabytes without EAGAIN, so without a budget one download could hold the loop.
    /// </summary>
    private const long FileBytesPerTurn = 4 * 1024 * 1024;

    /// <summary>Size of the buffer used when a file must be copied because sendfile refused it.</summary>
    private const int CopyBufferSize = 64 * 1024;

    [ThreadStatic]
    private static MemoryHandle[]? t_handles;

    private readonly SpliceConnection _connection;
    private readonly PipeReader _output;
    private readonly SpliceOutputWriter _writer;
    private readonly long _maxSendFileChunk;
    private long _pipeBytesSent;

    public SendPump(SpliceConnection connection, PipeReader output, SpliceOutputWriter writer, long maxSendFileChunk)
    {
        _connection = connection;
        _output = output;
        _writer = writer;
        _maxSendFileChunk = maxSendFileChunk;
    }

    /// <summary>Stops the pump for a holder of the socket (<see cref="ISocketHandoffFeature"/>).</summary>
    public PumpGate Gate { get; } = new();

    /// <summary>
    /// Asks the pump to stop once everything written so far has left. Any thread. A pump waiting for the
    /// application's next flush is woken (a canceled read) so that it sees the request; one busy sending
    /// sees it when it has sent what it has.
    /// </summary>
    public Task<bool> Pause()
    {
        Task<bool> stopped = Gate.RequestPause();
        _output.CancelPendingRead();
        return stopped;
    }

    /// <summary>Runs until the application completes the output, or the connection fails or is aborted.</summary>
    public async Task RunAsync()
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                FileSegment? file = _writer.PeekFile();
                if (file is not null && file.Position == _pipeBytesSent)
                {
                    await SendFileAsync(file);
                    _writer.DequeueFile();
                    continue;
                }

                ReadResult result;
                if (Gate.IsPauseRequested && file is null)
                {
                    // The safe point of a pause: nothing queued, and nothing unread in the pipe. TryRead, not
                    // ReadAsync: the pipe may hold bytes written before the pause, which must leave first.
                    if (!_output.TryRead(out result))
                    {
                        if (await Gate.ParkAsync() is { } failure)
                        {
                            throw SendFailed(failure.Result, failure.Syscall);
                        }
                        if (_connection.IsShuttingDown)
                        {
                            error = _connection.ShutdownReason;
                            break;
                        }
                        continue;
                    }
                }
                else
                {
                    result = await _output.ReadAsync();
                }
                if (_connection.IsShuttingDown)
                {
                    error = _connection.ShutdownReason;
                    break;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                file = _writer.PeekFile();
                long limit = file is null ? long.MaxValue : file.Position - _pipeBytesSent;
                bool cut = buffer.Length > limit;
                ReadOnlySequence<byte> toSend = cut ? buffer.Slice(0, limit) : buffer;

                if (!toSend.IsEmpty)
                {
                    bool fileFollows = toSend.Length == limit;
                    if (!await SendAsync(toSend, fileFollows))
                    {
                        error = _connection.ShutdownReason;
                        break;
                    }
                    _pipeBytesSent += toSend.Length;
                }

                if (cut)
                {
                    // Consumed and examined at the file's position: the rest is read again, at once, after the file.
                    _output.AdvanceTo(toSend.End);
                    continue;
                }
                _output.AdvanceTo(buffer.End);

                if (result.IsCompleted && _writer.PeekFile() is null)
                {
                    break; // Graceful: the application completed the output and all of it has left.
                }
            }
        }
        catch (SendFailedException ex)
        {
            error = ex.InnerException;
        }
        catch (FileSendException ex)
        {
            error = ex; // Logged once, at Error, by the response body feature that queued the file.
        }
        catch (Exception ex)
        {
            error = ex;
            Log.ConnectionError(_connection.Logger, _connection.ConnectionId, ex);
        }
        finally
        {
            Gate.End();
            _writer.StopFiles();
            _connection.OnSendPumpEnded(error);
            _output.Complete();
        }
    }

    /// <summary>
    /// A send to the socket failed with <paramref name="result"/> (the pump's own, or a holder's handed back with
    /// the socket): a reset (the peer left) is logged as one (event
    /// 106), anything else as a connection error (event 107, Debug: Kestrel reports the aborted request itself),
    /// and the pump ends through <see cref="SendFailedException"/> with the connection's abort reason.
    /// </summary>
    private SendFailedException SendFailed(SyscallResult result, string syscall, string? detail = null) =>
        new(_connection.SocketFailure(result, syscall, detail));

    /// <summary>Carries a send's failure, already logged, out of the nested sends to <see cref="RunAsync"/>.</summary>
    private sealed class SendFailedException(Exception reason) : Exception(reason.Message, reason);

    /// <summary>
    /// Sends <paramref name="buffer"/> completely, waiting for writability as needed. Returns false if the
    /// connection started shutting down meanwhile. <paramref name="fileFollows"/>: a file is the next thing
    /// sent, so the bytes may wait for it (MSG_MORE; see the class comment).
    /// </summary>
    private async ValueTask<bool> SendAsync(ReadOnlySequence<byte> buffer, bool fileFollows)
    {
        ReadinessEdge writable = _connection.Readiness.Writable;
        int flags = fileFollows ? LibC.MSG_MORE : 0;
        while (!buffer.IsEmpty)
        {
            if (_connection.IsShuttingDown)
            {
                return false;
            }
            int seen = writable.Observe();
            SyscallResult sent = SendOnce(buffer, flags);
            if (sent.WouldBlock)
            {
                await writable.WaitAsync(seen);
                continue;
            }
            if (!sent.IsSuccess)
            {
                throw SendFailed(sent, "sendmsg");
            }
            // A short count is not taken for a full socket: only EAGAIN says that. Usually a short count does
            // mean the buffer filled (a non-blocking stream socket returns what it queued), and the next call
            // costs one EAGAIN; but a count cut short for any other reason (memory pressure, a signal, a fault
            // injected by a test) would otherwise wait for an EPOLLOUT edge that never comes.
            buffer = buffer.Slice(sent.Count);
        }
        return true;
    }

    /// <summary>One sendmsg over the first <see cref="MaxIOVectors"/> segments.</summary>
    private unsafe SyscallResult SendOnce(in ReadOnlySequence<byte> buffer, int flags)
    {
        LibC.IOVector* vectors = stackalloc LibC.IOVector[MaxIOVectors];
        // Per loop thread rather than per connection: SendOnce never awaits, and 10,000 idle connections
        // should not each carry 1.5 KiB of handles.
        MemoryHandle[] handles = t_handles ??= new MemoryHandle[MaxIOVectors];
        int count = 0;
        try
        {
            foreach (ReadOnlyMemory<byte> segment in buffer)
            {
                if (segment.IsEmpty)
                {
                    continue;
                }
                // Pool memory is pre-pinned, so Pin() costs nothing; other memory gets a pinning handle.
                handles[count] = segment.Pin();
                vectors[count].Base = (byte*)handles[count].Pointer;
                vectors[count].Length = (nuint)segment.Length;
                if (++count == MaxIOVectors)
                {
                    break;
                }
            }
            return _connection.Syscalls.SendMessage(_connection.Socket, vectors, count, flags);
        }
        finally
        {
            for (int i = 0; i < count; i++)
            {
                handles[i].Dispose();
            }
        }
    }

    /// <summary>
    /// Sends one file segment with sendfile(2). Invariants: returns only when the whole segment has been
    /// sent or the connection is closing; a 0 return before the count means the file shrank, which aborts the
    /// connection; EINVAL, ENOSYS or EOPNOTSUPP before the first byte switch to a copy through user space.
    /// </summary>
    private async ValueTask SendFileAsync(FileSegment file)
    {
        ReadinessEdge writable = _connection.Readiness.Writable;
        long sentThisTurn = 0;
        // The file offset up to which the page cache has been checked (and, where it was cold, filled).
        long checkedThrough = file.Offset;
        try
        {
            while (file.Remaining > 0)
            {
                if (_connection.IsShuttingDown)
                {
                    file.SetConnectionClosed();
                    return;
                }
                if (file.CopiedBecause is not null)
                {
                    if (!await CopyFileChunkAsync(file))
                    {
                        file.SetConnectionClosed();
                        return;
                    }
                    continue;
                }

                long chunk = Math.Min(file.Remaining, _maxSendFileChunk);
                if (file.Offset >= checkedThrough)
                {
                    // Once per chunk, not per call: a chunk takes several sendfile calls when the socket fills.
                    if (file.Residency?.IsFresh == true)
                    {
                        // Probed whole and resident a moment ago (see ResidencyMemo): no probe.
                    }
                    else if (_connection.Residency.IsCached(file.File, file.Offset, chunk))
                    {
                        file.Residency?.Probed(file.Offset, chunk);
                    }
                    else
                    {
                        await PrefetchAsync(file, chunk);
                        sentThisTurn = 0; // The pump now runs on the thread pool, off the loop's turn.
                    }
                    checkedThrough = file.Offset + chunk;
                }
                chunk = Math.Min(chunk, checkedThrough - file.Offset);
                int seen = writable.Observe();
                SyscallResult sent = _connection.Syscalls.SendFile(_connection.Socket, file.File, file.Offset, chunk);
                if (sent.Count > 0)
                {
                    file.Advance(sent.Count);
                    sentThisTurn += sent.Count;
                    // A short count is not taken for a full socket (as a short sendmsg is): the file may have
                    // ended early. The next call tells which: EAGAIN (then wait for room) or 0 (truncated).
                    if (sentThisTurn >= FileBytesPerTurn && file.Remaining > 0)
                    {
                        sentThisTurn = 0;
                        await _connection.Loop.Yield();
                    }
                    continue;
                }
                if (sent.IsSuccess)
                {
                    throw new FileTruncatedException(file); // 0 before the count: the file ended early.
                }
                if (sent.WouldBlock)
                {
                    // Only the socket can say EAGAIN: the file was opened blocking (see FileOpener).
                    sentThisTurn = 0;
                    await writable.WaitAsync(seen);
                }
                else if (sent.IsUnsupported && file.Remaining == file.Count)
                {
                    file.CopiedBecause = Errno.Name(sent.Errno);
                }
                else if (sent.IsConnectionReset)
                {
                    throw SendFailed(sent, "sendfile", file.Path);
                }
                else
                {
                    // Not the peer: the file could not be read (EIO, or EINVAL once bytes have left). Reported
                    // like a truncation: the response cannot be completed as framed.
                    throw new FileReadException(file, sent.ToException("sendfile", file.Path));
                }
            }
            file.SetSent();
        }
        catch (FileSendException ex)
        {
            file.SetFailed(ex);
            throw;
        }
        catch
        {
            file.SetConnectionClosed();
            throw;
        }
        finally
        {
            Log.FileSegmentEnded(_connection.Logger, _connection.ConnectionId, file.Path,
                file.Completion.Exception?.InnerException switch
                {
                    FileTruncatedException => "truncated",
                    FileReadException => "unreadable",
                    _ => file.IsCompleted && file.Completion.Result ? "sent" : "closed",
                },
                file.Count - file.Remaining, file.Count);
        }
    }

    /// <summary>
    /// Reads a cold chunk into the page cache off the loop (see <see cref="FileResidency"/>); the pump goes on on
    /// the thread pool, and sendfile then finds the pages cached. A read error is the file's, reported as sendfile's
    /// would be. The connection may shut down meanwhile: the loop's next step sees it.
    /// </summary>
    private async ValueTask PrefetchAsync(FileSegment file, long count)
    {
        SyscallResult read = await _connection.Residency.WarmAsync(file.File, file.Offset, count).ConfigureAwait(false);
        if (!read.IsSuccess)
        {
            throw new FileReadException(file, read.ToException("pread", file.Path));
        }
    }

    /// <summary>The user-space path for a file sendfile refused: pread into a pooled buffer, then send.</summary>
    private async ValueTask<bool> CopyFileChunkAsync(FileSegment file)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyBufferSize, file.Remaining));
        try
        {
            SyscallResult read = _connection.Syscalls.ReadFile(file.File, buffer.AsSpan(0, (int)Math.Min(buffer.Length, file.Remaining)), file.Offset);
            if (!read.IsSuccess)
            {
                throw new FileReadException(file, read.ToException("pread", file.Path));
            }
            if (read.Count == 0)
            {
                throw new FileTruncatedException(file);
            }
            // MORE on all but the last chunk: the file's bytes are the next thing sent until it ends.
            if (!await SendAsync(new ReadOnlySequence<byte>(buffer, 0, (int)read.Count), fileFollows: read.Count < file.Remaining))
            {
                return false;
            }
            file.Advance(read.Count);
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
