using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// Sends the output pipe and the queued file segments in order. It runs on the thread that flushed, after
/// that thread's current work (see <see cref="SendScheduler"/>: no other thread is woken for a response that
/// fits the socket buffer), and continues on the loop thread after a wait for writability; it is one logical
/// thread either way, so its own state needs no lock.
///
/// Pipe bytes leave with one sendmsg over up to <see cref="MaxIOVectors"/> segments. A file queued at pipe
/// position P is sent with sendfile(2) once exactly P pipe bytes have left, and no pipe byte after P leaves
/// before it: headers, file, next response. Bytes that precede a file (its headers) are sent with MSG_MORE,
/// so that a small file leaves in the same TCP segment as its headers.
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

    /// <summary>True after bytes left with MSG_MORE and nothing has pushed them yet.</summary>
    private bool _heldBack;

    public SendPump(SpliceConnection connection, PipeReader output, SpliceOutputWriter writer, long maxSendFileChunk)
    {
        _connection = connection;
        _output = output;
        _writer = writer;
        _maxSendFileChunk = maxSendFileChunk;
    }

    /// <summary>Runs until the application completes the output, or the connection fails or is aborted.</summary>
    public async Task RunAsync()
    {
        Exception? error = null;
        bool graceful = false;
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

                if (_heldBack && file is null && !_writer.IsFileExpected)
                {
                    PushHeldBytes();
                }

                ReadResult result = await _output.ReadAsync();
                if (_connection.IsClosing)
                {
                    break;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                file = _writer.PeekFile();
                long limit = file is null ? long.MaxValue : file.Position - _pipeBytesSent;
                bool cut = buffer.Length > limit;
                ReadOnlySequence<byte> toSend = cut ? buffer.Slice(0, limit) : buffer;

                if (!toSend.IsEmpty)
                {
                    bool moreFollows = file is not null ? toSend.Length == limit : _writer.IsFileExpected;
                    if (!await SendAsync(toSend, moreFollows))
                    {
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
                    graceful = true;
                    break;
                }
            }
        }
        catch (SyscallException ex) when (Errno.IsConnectionReset(ex.Errno))
        {
            error = new ConnectionResetException(ex.Message, ex);
            Log.ConnectionReset(_connection.Logger, _connection.ConnectionId);
        }
        catch (FileTruncatedException ex)
        {
            error = ex;
        }
        catch (Exception ex)
        {
            error = ex;
            Log.ConnectionError(_connection.Logger, _connection.ConnectionId, ex);
        }
        finally
        {
            _writer.StopFiles();
            _connection.OnSendPumpCompleted(graceful, error);
            _output.Complete();
        }
    }

    /// <summary>
    /// Sends <paramref name="buffer"/> completely, waiting for writability as needed. Returns false if the
    /// connection started closing meanwhile.
    /// </summary>
    private async ValueTask<bool> SendAsync(ReadOnlySequence<byte> buffer, bool moreFollows)
    {
        ReadinessEdge writable = _connection.Readiness.Writable;
        int flags = LibC.MSG_NOSIGNAL | (moreFollows ? LibC.MSG_MORE : 0);
        while (!buffer.IsEmpty)
        {
            if (_connection.Readiness.IsCanceled)
            {
                return false;
            }
            int seen = writable.Observe();
            nint sent = SendOnce(buffer, flags, out long offered);
            if (sent < 0)
            {
                int errno = LibC.LastErrno;
                if (errno == Errno.EAGAIN)
                {
                    await writable.WaitAsync(seen);
                    continue;
                }
                if (errno == Errno.EINTR)
                {
                    continue;
                }
                throw new SyscallException("sendmsg", errno);
            }
            buffer = buffer.Slice(sent);
            if (sent < offered)
            {
                // A short send means the socket buffer is full; the next edge says when it has room.
                await writable.WaitAsync(seen);
            }
        }
        _heldBack = moreFollows;
        return true;
    }

    /// <summary>One sendmsg over the first <see cref="MaxIOVectors"/> segments; <paramref name="offered"/> is their size.</summary>
    private unsafe nint SendOnce(in ReadOnlySequence<byte> buffer, int flags, out long offered)
    {
        offered = 0;
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
                offered += segment.Length;
                if (++count == MaxIOVectors)
                {
                    break;
                }
            }
            LibC.MessageHeader message = default;
            message.IOVectors = vectors;
            message.IOVectorCount = (nuint)count;
            return LibC.sendmsg(_connection.Socket, &message, flags);
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
    /// Bytes went out with MSG_MORE but no file followed (the response fell back or failed): setting
    /// TCP_NODELAY pushes pending output at once (tcp(7)), instead of leaving it to the cork timer.
    /// </summary>
    private void PushHeldBytes()
    {
        _heldBack = false;
        if (_connection.IsTcp)
        {
            LibC.SetSocketOption(_connection.Socket, LibC.IPPROTO_TCP, LibC.TCP_NODELAY, 1, "TCP_NODELAY");
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
        try
        {
            while (file.Remaining > 0)
            {
                if (_connection.Readiness.IsCanceled)
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
                int seen = writable.Observe();
                nint sent = SendFileOnce(file, chunk);
                if (sent > 0)
                {
                    file.Advance(sent);
                    sentThisTurn += sent;
                    // A short count is not taken for a full socket (as a short sendmsg is): the file may have
                    // ended early. The next call tells which: EAGAIN (then wait for room) or 0 (truncated).
                    if (sentThisTurn >= FileBytesPerTurn && file.Remaining > 0)
                    {
                        sentThisTurn = 0;
                        await _connection.Loop.Yield();
                    }
                    continue;
                }
                if (sent == 0)
                {
                    throw new FileTruncatedException(file);
                }
                int errno = LibC.LastErrno;
                switch (errno)
                {
                    case Errno.EAGAIN:
                        sentThisTurn = 0;
                        await writable.WaitAsync(seen);
                        break;
                    case Errno.EINTR:
                        break;
                    case Errno.EINVAL or Errno.ENOSYS or Errno.EOPNOTSUPP when file.Remaining == file.Count:
                        file.CopiedBecause = Errno.Name(errno);
                        break;
                    default:
                        throw new SyscallException("sendfile", errno, file.Path);
                }
            }
            _heldBack = false; // sendfile's last chunk goes out without MORE, pushing the headers with it.
            file.SetSent();
        }
        catch (FileTruncatedException ex)
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
                file.Completion.Status == TaskStatus.Faulted ? "truncated" : file.IsCompleted && file.Completion.Result ? "sent" : "closed",
                file.Count - file.Remaining, file.Count);
        }
    }

    private unsafe nint SendFileOnce(FileSegment file, long chunk)
    {
        // sendfile advances this copy of the offset; the segment's own offset moves by the returned count.
        long offset = file.Offset;
        return LibC.sendfile(_connection.Socket, file.File, &offset, (nuint)chunk);
    }

    private static unsafe nint ReadFile(FileSegment file, byte[] buffer)
    {
        fixed (byte* bytes = buffer)
        {
            return LibC.pread(file.File, bytes, (nuint)Math.Min(buffer.Length, file.Remaining), file.Offset);
        }
    }

    /// <summary>The user-space path for a file sendfile refused: pread into a pooled buffer, then send.</summary>
    private async ValueTask<bool> CopyFileChunkAsync(FileSegment file)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyBufferSize, file.Remaining));
        try
        {
            nint read = ReadFile(file, buffer);
            if (read < 0)
            {
                throw LibC.Fail("pread", file.Path);
            }
            if (read == 0)
            {
                throw new FileTruncatedException(file);
            }
            if (!await SendAsync(new ReadOnlySequence<byte>(buffer, 0, (int)read), moreFollows: read < file.Remaining))
            {
                return false;
            }
            file.Advance(read);
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

/// <summary>A file became shorter than the bytes promised for it while it was being sent.</summary>
internal sealed class FileTruncatedException(FileSegment file)
    : IOException($"The file '{file.Path}' was truncated while it was being sent: {file.Count - file.Remaining} of {file.Count} bytes from offset {file.Offset - (file.Count - file.Remaining)} had been sent when it ended.");
