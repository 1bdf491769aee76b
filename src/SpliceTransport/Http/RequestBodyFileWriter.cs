using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using Microsoft.AspNetCore.Http.Features;
using SpliceTransport.Interop;
using SpliceTransport.Transport;

namespace SpliceTransport.Http;

/// <summary>
/// Saves a request body into a file (the work behind <c>SaveBodyToFileAsync</c>). The body is read through
/// <see cref="HttpRequest.BodyReader"/>, so Kestrel frames, counts and limits it as for any other read
/// (MaxRequestBodySize, MinRequestBodyDataRate, 100-continue, keep-alive, RequestAborted), and every body wrapper
/// (decompression, a replaced <see cref="HttpRequest.Body"/>) applies.
///
/// On SpliceTransport, for a Content-Length body on HTTP/1.x whose transport pipe and body reader are still the
/// originals, the rest of the body after the first read is spliced: the receive pump is paused, what the input
/// already holds is written (copied, it is in memory already), and the pump then splices exactly the rest of the
/// body socket → kernel pipe → file, writing placeholder bytes into Kestrel's input for what reached the file (see
/// <see cref="ReceiveSegment"/>). Kestrel's reader still counts the body, times it and ends it; this reader skips
/// the placeholders and writes only real bytes (those that came before, and those after a segment that stopped
/// early). Otherwise every read is written with one pwritev.
///
/// Invariants:
/// <list type="bullet">
/// <item>The first body read comes before any file is touched: a Content-Length over MaxRequestBodySize is a 413
/// with nothing created, and the 100 of <c>Expect: 100-continue</c> goes out only when the body is wanted.</item>
/// <item>The path form writes a temporary file beside the target and renames it into place only once the whole
/// body is in it (and, when asked, on disk): the target is replaced atomically or not at all, and the temporary
/// file is deleted on every failure.</item>
/// <item>A full disk (ENOSPC, EDQUOT) is an <see cref="IOException"/> naming the errno and the file.</item>
/// <item>The file is closed only after the pump's last system call on it (<see cref="ReceiveSegment.FileReleased"/>).</item>
/// </list>
/// </summary>
internal static class RequestBodyFileWriter
{
    /// <summary>
    /// The temporary file's name keeps at most this much of the target's name, so that it stays within NAME_MAX
    /// (255 bytes) with its dot, random part and suffix, whatever the target's name.
    /// </summary>
    private const int TemporaryNameStemLength = 64;

    private const string TemporaryNameSuffix = ".upload";

    /// <summary>
    /// The least body left after the first read that is spliced: 128 KiB. Below it, pausing the pump, reserving the
    /// file, renting a pipe and the hops to the disk threads cost more than the copy they save. Measured
    /// (perf/results/upload-threshold.md, the sample, 4 connections, the input's read-ahead 16 KiB): a 128 KiB body
    /// (about 112 KiB left) cost 750–862 µs of CPU spliced against 685–727 copied; 256 KiB (about 240 KiB left) 865
    /// against 1,163; 1 MiB 1,640 against 3,834.
    /// </summary>
    internal const long MinimumSplicedBody = 128 * 1024;

    public static async Task<UploadResult> SaveAsync(HttpRequest request, SafeFileHandle file, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(file);
        if (file.IsInvalid || file.IsClosed)
        {
            throw new ArgumentException("The file handle is closed or invalid.", nameof(file));
        }
        string? reason = ChooseFallback(request, file);
        try
        {
            PipeReader body = request.BodyReader;
            ReadResult first = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
            return await SaveBodyAsync(request, body, first, file, target: null, reason, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (request.HttpContext.RequestAborted.IsCancellationRequested)
        {
            throw Aborted(ex);
        }
    }

    public static async Task<UploadResult> SaveAsync(HttpRequest request, string path, bool flushToDisk, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentException.ThrowIfNullOrEmpty(path);
        string target = Path.GetFullPath(path);
        string name = Path.GetFileName(target);
        string? folder = Path.GetDirectoryName(target);
        if (name.Length == 0 || folder is null)
        {
            throw new ArgumentException($"The path '{path}' names a folder, not a file.", nameof(path));
        }
        string? reason = ChooseFallback(request, file: null);
        PipeReader body = request.BodyReader;
        ReadResult first;
        try
        {
            first = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (request.HttpContext.RequestAborted.IsCancellationRequested)
        {
            throw Aborted(ex);
        }

        string temporary = Path.Combine(folder, $".{name[..Math.Min(name.Length, TemporaryNameStemLength)]}.{Guid.NewGuid():N}{TemporaryNameSuffix}");
        SafeFileHandle opened;
        try
        {
            opened = File.OpenHandle(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        }
        catch
        {
            GiveBack(body, first);
            throw;
        }
        try
        {
            UploadResult result;
            using (SafeFileHandle file = opened)
            {
                result = await SaveBodyAsync(request, body, first, file, target, reason, cancellationToken).ConfigureAwait(false);
                if (flushToDisk)
                {
                    FlushToDisk(file, target);
                }
            }
            File.Move(temporary, target, overwrite: true);
            if (flushToDisk)
            {
                // The rename is durable only once the folder's entry is on disk too.
                FlushFolder(request.HttpContext.Features.Get<IZeroCopyInputFeature>()?.Syscalls ?? Syscalls.Default, folder);
            }
            return result;
        }
        catch (OperationCanceledException ex) when (request.HttpContext.RequestAborted.IsCancellationRequested)
        {
            DeleteQuietly(temporary);
            throw Aborted(ex);
        }
        catch
        {
            DeleteQuietly(temporary);
            throw;
        }
    }

    /// <summary>
    /// A client that went away mid-body is an I/O error to the app, as when Kestrel's own read fails on the
    /// reset, even when the wait it interrupted was one on RequestAborted (the token apps usually pass).
    /// </summary>
    private static IOException Aborted(OperationCanceledException canceled) =>
        new("The request was aborted (the client disconnected, or the connection was aborted) before its whole body was saved.", canceled);

    /// <summary>
    /// Writes the body from <paramref name="first"/> (its first read) to the end into <paramref name="file"/> from
    /// offset 0: the first read as it is, then the rest spliced when <paramref name="reason"/> is null and enough is
    /// left, else copied. Reports the fallback reason, if any, once.
    /// </summary>
    private static async Task<UploadResult> SaveBodyAsync(HttpRequest request, PipeReader body, ReadResult first, SafeFileHandle file, string? target,
        string? reason, CancellationToken cancellationToken)
    {
        long written;
        if (reason is null && !first.IsCompleted && request.ContentLength!.Value - first.Buffer.Length >= MinimumSplicedBody)
        {
            IZeroCopyInputFeature input = request.HttpContext.Features.Get<IZeroCopyInputFeature>()!;
            (written, ReceiveSegment? segment, reason) = await HoldAsync(request, body, input, first, file, target, cancellationToken).ConfigureAwait(false);
            if (segment is not null)
            {
                return await SpliceRestAsync(request, body, segment, file, cancellationToken).ConfigureAwait(false);
            }
        }
        else
        {
            // The whole body came in the first read, or too little is left to be worth a pipe.
            written = await WriteReadAsync(body, first, file, 0, target, cancellationToken).ConfigureAwait(false);
            reason ??= UploadFallbackReasons.SmallBody;
        }
        // Every way here has decided a reason: a hold without a segment gives one.
        Report(request.HttpContext, reason!);
        if (!first.IsCompleted)
        {
            written = await CopyRestAsync(body, file, written, target, cancellationToken).ConfigureAwait(false);
        }
        return new UploadResult(written, 0, reason);
    }

    /// <summary>
    /// Gives a read back unconsumed before failing: Kestrel drains the body for the next request only from a reader
    /// that is not in the middle of a read.
    /// </summary>
    private static void GiveBack(PipeReader body, ReadResult read) => body.AdvanceTo(read.Buffer.Start);

    /// <summary>
    /// Pauses the receive pump, writes the first read and what else the input already holds (received before the
    /// pause), and resumes the pump with a segment for the rest of the body: from then on the socket's body bytes go
    /// to the file. The pause comes before the first read is given back, so the pump, stopped at the input's limit
    /// with that read unconsumed, does not take another input's worth off the socket to be copied. Returns the bytes
    /// written so far and the segment, or a reason when the body is not spliced after all.
    /// </summary>
    private static async Task<(long Written, ReceiveSegment? Segment, string? Reason)> HoldAsync(HttpRequest request, PipeReader body, IZeroCopyInputFeature input,
        ReadResult first, SafeFileHandle file, string? target, CancellationToken cancellationToken)
    {
        bool paused;
        try
        {
            // A pump waiting for the app to read grants the pause at once (it parks after that wait), so this does
            // not wait for the first read's AdvanceTo below.
            paused = await input.PauseReceivingAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            GiveBack(body, first);
            throw;
        }
        if (!paused)
        {
            long copied = await WriteReadAsync(body, first, file, 0, target, cancellationToken).ConfigureAwait(false);
            return (copied, null, UploadFallbackReasons.ReceiveEnded);
        }
        ReceiveSegment? segment = null;
        long written = 0;
        try
        {
            written = await WriteReadAsync(body, first, file, 0, target, cancellationToken).ConfigureAwait(false);
            // The pump is stopped: what the input holds now is all that came before, and nothing follows it until
            // the resume. Kestrel's reader gives only body bytes, never the next request's.
            while (body.TryRead(out ReadResult buffered))
            {
                bool empty = buffered.Buffer.IsEmpty;
                written += await WriteReadAsync(body, buffered, file, written, target, cancellationToken).ConfigureAwait(false);
                if (buffered.IsCompleted)
                {
                    return (written, null, UploadFallbackReasons.SmallBody); // The whole body had arrived.
                }
                if (empty)
                {
                    break;
                }
            }
            long rest = request.ContentLength!.Value - written;
            if (target is not null)
            {
                Preallocate(input.Syscalls, file, written, rest, target);
            }
            segment = new ReceiveSegment(file, target ?? NameOf(file), written, rest);
            return (written, segment, null);
        }
        finally
        {
            input.ResumeReceiving(segment);
        }
    }

    /// <summary>
    /// Reads the rest of the body through Kestrel while the pump splices it: the placeholders are skipped, real bytes
    /// (after a segment that stopped early) are written at their place. Waits for the pump to release the file before
    /// it returns or throws.
    /// </summary>
    private static async Task<UploadResult> SpliceRestAsync(HttpRequest request, PipeReader body, ReceiveSegment segment, SafeFileHandle file,
        CancellationToken cancellationToken)
    {
        // No wake-up is needed when the segment stops early: what follows it always arrives as bytes (the rest of the
        // body through recv, or, after a failed write, what that write left in the pipe), and each read checks why.
        // A canceled read could not be taken back, and would reach Kestrel's own drain of the body after a failure.
        var segments = new List<ReadOnlyMemory<byte>>();
        long seen = 0;
        try
        {
            while (true)
            {
                ReadResult result = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = result.Buffer;
                long length = buffer.Length;
                try
                {
                    // Read after the read: the pump raises it before it flushes placeholders, and fixes it before a
                    // real byte follows them, so everything in this buffer below it is a placeholder.
                    long skip = Math.Clamp(segment.Published - seen, 0, length);
                    if (segment.Failure is { } failure)
                    {
                        throw failure;
                    }
                    if (skip < length)
                    {
                        await WriteAsync(file, buffer.Slice(skip), segment.FileOffset + seen + skip, segments, segment.Path, cancellationToken).ConfigureAwait(false);
                    }
                }
                finally
                {
                    // Also when failing: Kestrel drains the rest of the body for the next request only from a reader
                    // that is not in the middle of a read.
                    body.AdvanceTo(buffer.End);
                }
                seen += length;
                if (result.IsCompleted)
                {
                    break;
                }
            }
            if (seen != segment.Count)
            {
                // Kestrel's framing and the Content-Length the segment was made from disagree (a middleware rewrote
                // the header): the pump may have taken bytes that were not this body's. Nothing on the connection
                // can be trusted to line up any more.
                request.HttpContext.Abort();
                throw new InvalidOperationException(
                    $"The request body ended after {seen} bytes where its Content-Length promised {segment.Count}; the connection was aborted.");
            }
        }
        catch
        {
            segment.RequestStop();
            throw;
        }
        finally
        {
            await segment.FileReleased.ConfigureAwait(false);
            if (segment.FallbackReason is { } fallback)
            {
                Report(request.HttpContext, fallback);
            }
        }
        return new UploadResult(segment.FileOffset + seen, segment.Spliced, segment.FallbackReason);
    }

    /// <summary>Writes the rest of the body, read by read, from <paramref name="offset"/>; returns where it ended.</summary>
    private static async Task<long> CopyRestAsync(PipeReader body, SafeFileHandle file, long offset, string? target, CancellationToken cancellationToken)
    {
        var segments = new List<ReadOnlyMemory<byte>>(); // One list for every read's pwritev.
        while (true)
        {
            ReadResult result = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
            offset += await WriteReadAsync(body, result, file, offset, target, cancellationToken, segments).ConfigureAwait(false);
            if (result.IsCompleted)
            {
                return offset;
            }
        }
    }

    /// <summary>
    /// Writes one read's bytes at <paramref name="offset"/> (one pwritev) and releases them to Kestrel; returns how
    /// many. A canceled read (nobody here cancels one) throws.
    /// </summary>
    private static async Task<long> WriteReadAsync(PipeReader body, ReadResult result, SafeFileHandle file, long offset, string? target, CancellationToken cancellationToken,
        List<ReadOnlyMemory<byte>>? segments = null)
    {
        ReadOnlySequence<byte> buffer = result.Buffer;
        long length = buffer.Length; // Before AdvanceTo, which gives the segments back.
        try
        {
            if (length != 0)
            {
                await WriteAsync(file, buffer, offset, segments, target, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            // Also when the write fails: Kestrel can then drain the rest of the body and keep the connection.
            body.AdvanceTo(buffer.End);
        }
        if (result.IsCanceled && !result.IsCompleted)
        {
            throw new OperationCanceledException("The read of the request body was canceled.");
        }
        return length;
    }

    /// <summary>One pwritev of <paramref name="buffer"/>'s segments at <paramref name="offset"/>; a full disk names the errno and the file.</summary>
    private static async Task WriteAsync(SafeFileHandle file, ReadOnlySequence<byte> buffer, long offset, List<ReadOnlyMemory<byte>>? segments, string? target,
        CancellationToken cancellationToken)
    {
        segments ??= [];
        segments.Clear();
        foreach (ReadOnlyMemory<byte> segment in buffer)
        {
            segments.Add(segment);
        }
        try
        {
            await RandomAccess.WriteAsync(file, segments, offset, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException ex) when (IsDiskFull(ex))
        {
            throw DiskFull("pwritev", ex, target ?? NameOf(file));
        }
    }

    /// <summary>
    /// Why this body will not be spliced, as one of the <see cref="UploadFallbackReasons"/>, or null when it may be
    /// (then the first read and what is left decide). Reported once the first read has decided the rest. <paramref name="file"/>: the caller's handle, or null for a file
    /// this writer creates.
    /// </summary>
    private static string? ChooseFallback(HttpRequest request, SafeFileHandle? file)
    {
        HttpContext context = request.HttpContext;
        if (context.Features.Get<IZeroCopyInputFeature>() is not { } input)
        {
            return UploadFallbackReasons.OtherTransport;
        }
        string? reason = !input.ZeroCopyUploads ? UploadFallbackReasons.Disabled
            : ZeroCopyEligibility.ConnectionFallbackReason(context, input.IsTransportPipeOwned)
            ?? (request.ContentLength is not { } contentLength ? UploadFallbackReasons.Chunked
                : contentLength < MinimumSplicedBody ? UploadFallbackReasons.SmallBody
                : context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: true } ? UploadFallbackReasons.BodyReadBefore
                : request.Headers.TransferEncoding.Count > 0 ? UploadFallbackReasons.Chunked
                : !input.IsRequestBodyAsAtStart(request.BodyReader, contentLength) ? UploadFallbackReasons.BodyWrapped
                : file is not null && !IsRegularFile(input.Syscalls, file) ? UploadFallbackReasons.NotRegularFile
                : null);
        return reason;
    }

    /// <summary>Counts and logs (Debug, event 204) that a body was, or from some point on was, copied rather than spliced.</summary>
    private static string Report(HttpContext context, string reason)
    {
        IServiceProvider? services = context.RequestServices;
        // The transport's meter exists only where UseSpliceTransport registered it.
        services?.GetService<SpliceMetrics>()?.UploadFellBack(reason);
        if (services?.GetService<ILoggerFactory>() is { } loggers)
        {
            Log.UploadFallback(loggers.CreateLogger("SpliceTransport.Http"), context.Connection.Id, reason);
        }
        return reason;
    }

    /// <summary>
    /// Reserves the blocks the rest of the body needs in the temporary file (the path form only: the caller's own file
    /// is left as it is), so that a disk that cannot hold the body says so before it is received, and so that the
    /// file system maps blocks once instead of reserving them page by page as the body is written (ext4's delayed
    /// allocation: measured 18% less system time writing 1 GiB through a pipe). A file system that cannot reserve
    /// (EOPNOTSUPP) writes as ever.
    /// </summary>
    private static void Preallocate(Syscalls syscalls, SafeFileHandle file, long offset, long length, string target)
    {
        SyscallResult reserved = syscalls.Preallocate(file, offset, length);
        if (!reserved.IsSuccess && !reserved.IsUnsupported)
        {
            throw reserved.ToException("fallocate", target);
        }
    }

    /// <summary>fsync(2) on the file: a file system that allocates late (ext4, XFS) may say ENOSPC only now.</summary>
    private static void FlushToDisk(SafeFileHandle file, string target)
    {
        try
        {
            RandomAccess.FlushToDisk(file);
        }
        catch (IOException ex) when (IsDiskFull(ex))
        {
            throw DiskFull("fsync", ex, target);
        }
    }

    /// <summary>The runtime's Unix I/O errors carry the errno in HResult.</summary>
    private static bool IsDiskFull(IOException ex) => ex.HResult is Errno.ENOSPC or Errno.EDQUOT;

    /// <summary>The runtime's message says "No space left on device" but not which errno; this names both, and the file.</summary>
    private static SyscallException DiskFull(string syscall, IOException ex, string file) => new(syscall, ex.HResult, file);

    /// <summary>
    /// Deletes the temporary file after a failure. Its own failure (the folder is gone, or no longer writable)
    /// must not replace the error the caller needs to see, and leaves nothing worse than a hidden file.
    /// </summary>
    private static void DeleteQuietly(string temporary)
    {
        try
        {
            File.Delete(temporary);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>fsync(2) on a folder, so that a rename in it survives a crash.</summary>
    private static void FlushFolder(Syscalls syscalls, string folder)
    {
        using FileDescriptorHandle handle = syscalls.Open(folder, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC).DescriptorOrThrow("open", folder);
        syscalls.Sync(handle).CountOrThrow("fsync", folder);
    }

    /// <summary>Whether the caller's handle is a regular file (a pipe or a device cannot take a splice at an offset).</summary>
    private static bool IsRegularFile(Syscalls syscalls, SafeFileHandle file)
    {
        syscalls.Stat(file, out FileStatus status).CountOrThrow("statx", NameOf(file));
        return status.IsRegularFile;
    }

    /// <summary>The path a caller's handle was opened with, for error messages (the handle does not say it).</summary>
    private static string NameOf(SafeFileHandle file) =>
        new FileInfo($"/proc/self/fd/{file.DangerousGetHandle()}").LinkTarget ?? "the request body's file";
}
