using System.Runtime.InteropServices;
using SpliceTransport.Interop;

namespace SpliceTransport.Splice;

/// <summary>
/// The moves the upload and proxy pumps make, each with the invariant that gives its EAGAIN one meaning.
/// The pump's cycle, for one direction:
/// <code>
/// seen = source.Readable.Observe();            // before the call (see ReadinessEdge)
/// fill = pipe.FillFrom(source, null, max);     // the pipe is empty here
/// WouldBlock  → return the pipe to the pool, await source.Readable.WaitAsync(seen), rent again
/// Completed   → loop: seen = destination.Writable.Observe(); drain = pipe.DrainTo(destination, offset)
///               WouldBlock → await destination.Writable.WaitAsync(seen), drain again
///               until the pipe is empty; then fill again
/// EndOfSource → done; Unsupported → copy instead; Failed → end the transfer
/// </code>
/// Never wait on one descriptor while holding bytes for another (acln0/zerocopy's rule, in our terms): a pump
/// whose pipe holds bytes waits only for the destination of those bytes; it waits for the source only with an
/// empty pipe, and better with none, so idle connections hold no pipe.
/// </summary>
internal sealed partial class SplicePipe
{
    /// <summary>
    /// Moves up to <paramref name="max"/> bytes from <paramref name="source"/> into the pipe: from a socket
    /// (<paramref name="offset"/> null) or from a file at <paramref name="offset"/>.
    ///
    /// Invariant: the pipe is empty on entry (it throws otherwise). Drain the pipe before reading the source
    /// again: an empty pipe always has room, so EAGAIN can only mean the source has nothing to read, and the pump
    /// may wait for the source's readability knowing it holds no bytes for anyone. A pump that waited for the
    /// source with bytes still in the pipe could wait forever: in a proxy, the peer may be waiting for exactly
    /// those bytes before it sends more.
    ///
    /// One call: on a non-blocking socket, splice takes what the receive queue holds, up to the limit or the
    /// pipe's room, and returns; a second call would most often only say EAGAIN. <paramref name="max"/> is what
    /// the transfer may still take: an upload must not read past its body into the next request.
    /// </summary>
    public TransferResult FillFrom(SafeHandle source, long? offset, int max)
    {
        if (!IsEmpty)
        {
            throw new InvalidOperationException($"The pipe still holds {Buffered} bytes: drain it before reading the source again.");
        }
        SyscallResult result = SpliceFrom(source, offset, Math.Min(max, Capacity));
        if (!result.IsSuccess)
        {
            return TransferResult.Stopped(0, result);
        }
        return result.Count == 0
            ? new TransferResult(0, TransferStatus.EndOfSource)
            : new TransferResult((int)result.Count, TransferStatus.Completed);
    }

    /// <summary>
    /// Moves the pipe's bytes, at most <paramref name="max"/>, to <paramref name="destination"/>: a socket
    /// (<paramref name="offset"/> null) or a file at <paramref name="offset"/> (the caller moves its own offset by
    /// <see cref="TransferResult.Moved"/>). It stops when they have left (Completed; with no limit the pipe is
    /// empty) or when the destination is full (WouldBlock).
    ///
    /// Invariant: every call is made with bytes in the pipe, so EAGAIN means the destination has no room, never
    /// that the pipe is empty. Wait for the destination's writability and drain again; the bytes wait in the pipe,
    /// and the source is not read until they have left. A file never says EAGAIN; one opened with O_APPEND, or on
    /// a filesystem that cannot splice, says EINVAL: Unsupported, with the bytes still in the pipe for
    /// <see cref="CopyOut"/>.
    /// </summary>
    public TransferResult DrainTo(SafeHandle destination, long? offset, int max = int.MaxValue)
    {
        int target = Math.Min(max, Buffered);
        int moved = 0;
        while (moved < target)
        {
            SyscallResult result = SpliceTo(destination, offset + moved, target - moved);
            if (!result.IsSuccess)
            {
                return TransferResult.Stopped(moved, result);
            }
            if (result.Count == 0)
            {
                // splice returns 0 only for an empty pipe with no writer; this one holds bytes and we hold its
                // write end, so the count is wrong, and looping would spin.
                throw new InvalidOperationException($"splice moved nothing out of a pipe said to hold {Buffered} bytes.");
            }
            moved += (int)result.Count;
        }
        return new TransferResult(moved, TransferStatus.Completed);
    }

    /// <summary>
    /// The fallback when <see cref="DrainTo"/> said Unsupported for a file: reads the pipe's bytes into
    /// <paramref name="buffer"/> and writes them to <paramref name="file"/> with pwrite at <paramref name="offset"/>,
    /// or with write(2) at the file's own position when it is null (what a file opened with O_APPEND needs:
    /// Linux's pwrite appends to such a file whatever the offset). Completed: the pipe is empty.
    ///
    /// Files only: a regular file never says EAGAIN, so every byte read from the pipe is written before the next
    /// is read; a socket could take part of a chunk and leave the rest with nowhere to go. Invariant:
    /// <see cref="Buffered"/> falls by what is read, <see cref="TransferResult.Moved"/> counts what was written;
    /// on Failed, the bytes read but not written are <paramref name="buffer"/>[<paramref name="unwritten"/>], so a
    /// caller that must lose nothing (an upload, whose bytes go back to Kestrel) can take them, ahead of what the
    /// pipe still holds.
    /// </summary>
    public TransferResult CopyOut(SafeHandle file, long? offset, Span<byte> buffer, out Range unwritten)
    {
        ArgumentOutOfRangeException.ThrowIfZero(buffer.Length, nameof(buffer));
        unwritten = default;
        int moved = 0;
        while (!IsEmpty)
        {
            SyscallResult read = ReadInto(buffer);
            if (!read.IsSuccess)
            {
                return new TransferResult(moved, TransferStatus.Failed, read.Errno);
            }

            int start = 0;
            int end = (int)read.Count;
            while (start < end)
            {
                SyscallResult written = _syscalls.WriteFile(file, buffer[start..end], offset + moved);
                if (!written.IsSuccess)
                {
                    unwritten = start..end;
                    return new TransferResult(moved, TransferStatus.Failed, written.Errno);
                }
                if (written.Count == 0)
                {
                    // write(2) to a regular file takes at least a byte or fails; 0 would loop for ever.
                    throw new IOException("write(2) wrote nothing to the file.");
                }
                moved += (int)written.Count;
                start += (int)written.Count;
            }
        }
        return new TransferResult(moved, TransferStatus.Completed);
    }

    /// <summary>
    /// read(2) of up to <paramref name="buffer"/>'s length of the pipe's bytes into it: how bytes taken off a socket
    /// reach user space when a transfer stops with its pipe not empty (they go on to the destination's managed
    /// pipe, so that none is lost). Invariant: the pipe holds at least what is asked, so the non-blocking read
    /// neither blocks nor says EAGAIN, and <see cref="Buffered"/> falls by exactly the count.
    /// </summary>
    public SyscallResult ReadInto(Span<byte> buffer)
    {
        ArgumentOutOfRangeException.ThrowIfZero(buffer.Length, nameof(buffer));
        int buffered = Buffered;
        if (buffered == 0)
        {
            return SyscallResult.Success(0);
        }
        SyscallResult read = _syscalls.Read(ReadEnd, buffer[..Math.Min(buffer.Length, buffered)]);
        if (read.IsSuccess && read.Count == 0)
        {
            throw new InvalidOperationException($"read found nothing in a pipe said to hold {buffered} bytes.");
        }
        Interlocked.Add(ref _buffered, -(int)read.Count);
        return read;
    }
}
