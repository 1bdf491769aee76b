using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using SpliceTransport.Interop;
using SpliceTransport.Transport;
using SpliceTransport.Files;

namespace SpliceTransport.Http;

/// <summary>
/// The response body feature of a request on SpliceTransport. Everything but <see cref="SendFileAsync"/>
/// is Kestrel's own. <see cref="SendFileAsync"/> sends the file with sendfile(2) when the response can
/// take raw bytes (HTTP/1.x, Content-Length framing, our own transport pipe, a regular file), and
/// otherwise hands it to Kestrel, counting why.
///
/// The zero-copy path, and why each step is where it is:
/// <list type="number">
/// <item>Check and open the file first, so errors come before any header.</item>
/// <item>Start the response and await a flush: only then have all earlier bytes reached our output writer,
/// and only then does Kestrel's body writer pass GetMemory/Advance straight through to it.</item>
/// <item>Queue the file at the writer's position, then write <c>count</c> bytes of scratch through Kestrel's
/// body writer, in blocks: Kestrel counts them, our writer swallows them without copying.</item>
/// <item>Each block's flush completes when the file has left the socket that far, which is what
/// MinResponseDataRate times, block by block, as for any other write.</item>
/// </list>
/// </summary>
internal sealed class SpliceResponseBodyFeature : IHttpResponseBodyFeature
{
    private readonly IHttpResponseBodyFeature _kestrel;
    private readonly IZeroCopyOutputFeature _connection;
    private readonly HttpContext _context;
    private readonly SpliceTransportOptions _options;
    private readonly SpliceMetrics _metrics;
    private readonly ILogger _logger;

    /// <summary>The segment of the file being sent, from the moment it is queued (sends of one response are sequential).</summary>
    private FileSegment? _queued;

    public SpliceResponseBodyFeature(IHttpResponseBodyFeature kestrel, IZeroCopyOutputFeature connection, HttpContext context,
        SpliceTransportOptions options, SpliceMetrics metrics, ILogger logger)
    {
        _kestrel = kestrel;
        _connection = connection;
        _context = context;
        _options = options;
        _metrics = metrics;
        _logger = logger;
    }

    public Stream Stream => _kestrel.Stream;

    public PipeWriter Writer => _kestrel.Writer;

    public void DisableBuffering() => _kestrel.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => _kestrel.StartAsync(cancellationToken);

    public Task CompleteAsync() => _kestrel.CompleteAsync();

    public async Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default)
    {
        HttpResponse response = _context.Response;
        if (HasNoBody())
        {
            // HEAD, 204 and 304 carry no body: start the response (headers only) and touch no file.
            await _kestrel.StartAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        string? reason = ConnectionFallbackReason() ?? FramingFallbackReason(response);
        if (reason is not null)
        {
            await FallBackAsync(path, offset, count, reason, cancellationToken).ConfigureAwait(false);
            return;
        }

        CachedFile? file = FileOpener.Open(_connection.Syscalls, _connection.Files, path, offset, count, out long length, out reason);
        if (file is null)
        {
            await FallBackAsync(path, offset, count, reason!, cancellationToken).ConfigureAwait(false);
            return;
        }

        FileSegment? segment = null;
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (!response.HasStarted && response.ContentLength is { } declared && length > declared)
            {
                // Kestrel's own path refuses the first write that exceeds the declared length before a header
                // is sent, so the app can still answer 500. Here it would only be refused once the file is
                // queued behind the headers, leaving nothing but an abort: refuse it now, as Kestrel words it.
                throw new InvalidOperationException($"Response Content-Length mismatch: too many bytes written ({length} of {declared}).");
            }
            if (!response.HasStarted && response.ContentLength is null)
            {
                response.ContentLength = length;
            }
            if (_options.SniffContentType && !response.HasStarted && string.IsNullOrEmpty(response.ContentType) && length > 0)
            {
                int sniffed = await WriteSniffedPrefixAsync(file.Handle, path, offset, length, cancellationToken).ConfigureAwait(false);
                offset += sniffed;
                length -= sniffed;
            }
            segment = await SendZeroCopyAsync(file, path, offset, length, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _connection.OutputWriter.CancelFileExpectation();
            // The queued segment, also when SendZeroCopyAsync threw after queuing it: the pump may still be
            // using the descriptor, so it is closed only once the segment has completed.
            ReleaseWhenSent(file, path, segment ?? _queued);
            _queued = null;
        }
    }

    // Pooled: its box (the state machine with every local) would be a new object for each response that waits for
    // its file, and SendFileAsync awaits the ValueTask exactly once, as pooling requires.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FileSegment?> SendZeroCopyAsync(CachedFile file, string path, long offset, long length, CancellationToken cancellationToken)
    {
        SpliceOutputWriter output = _connection.OutputWriter;
        PipeWriter body = _kestrel.Writer;
        if (!_context.Response.HasStarted)
        {
            if (length > 0)
            {
                // The headers wait for the file's first bytes. Not for an empty file: no file would follow to
                // carry them, and Kestrel makes no further flush for a response whose count is already complete.
                output.ExpectFile();
            }
            await _kestrel.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        // Everything written so far must reach our writer before the file is queued behind it.
        await body.FlushAsync(cancellationToken).ConfigureAwait(false);
        if (length == 0)
        {
            _metrics.ZeroCopySent(0);
            return null;
        }

        FileSegment segment = output.EnqueueFile(file.Handle, path, offset, length, file.Residency);
        using CancellationTokenRegistration abortOnCancel = cancellationToken.UnsafeRegister(static state =>
            ((IZeroCopyOutputFeature)state!).Abort(new ConnectionAbortedException("The file send was canceled.")), _connection);
        _queued = segment;
        try
        {
            await WriteFileCountThroughKestrelAsync(body, length, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (segment.Completion.Exception?.InnerException is FileSendException failure)
        {
            // The truncation aborted the connection, and that abort (RequestAborted) is what reached the writes.
            // Report the cause once; an OperationCanceledException from RequestAborted would be swallowed by
            // HttpResponse.SendFileAsync and the truncation never logged.
            LogFileFailure(failure);
            return segment;
        }
        catch (OperationCanceledException) when (segment.Completion is { IsCompletedSuccessfully: true, Result: true })
        {
            // Every byte had left before the cancellation (typically a client that closes the moment it has the
            // last byte): the response was delivered, zero-copy, and is counted as such.
            RecordSent(segment);
            return segment;
        }
        catch (Exception ex)
        {
            // The file is queued but the response cannot be completed as framed (Kestrel refused the count,
            // e.g. a Content-Length smaller than the file, or the send was canceled): abort rather than let
            // the file leave as bytes the client does not expect.
            _connection.Abort(new ConnectionAbortedException("The zero-copy file response could not be completed.", ex));
            throw;
        }
        try
        {
            if (await segment.Completion.ConfigureAwait(false))
            {
                RecordSent(segment);
            }
            else
            {
                // The connection closed first. A canceled caller learns it as Kestrel's own path would tell it.
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
        catch (FileSendException ex)
        {
            // The pump has aborted the connection; the client sees a short response and a close. This is the
            // one log line for it, so nothing is thrown for Kestrel to log again.
            LogFileFailure(ex);
        }
        return segment;
    }

    private void LogFileFailure(FileSendException failure)
    {
        if (failure is FileTruncatedException)
        {
            Log.FileTruncated(_logger, _connection.ConnectionId, failure);
        }
        else
        {
            Log.FileReadFailed(_logger, _connection.ConnectionId, failure);
        }
    }

    /// <summary>The first block of a file's count: a file up to this size is counted, and waited for, at once.</summary>
    internal const int FirstCountBlock = 1024 * 1024;

    /// <summary>
    /// Writes <paramref name="length"/> bytes of scratch through Kestrel's body writer, so that Kestrel counts
    /// the file; our output writer swallows them, and nothing is copied (see <see cref="SpliceOutputWriter.Scratch"/>).
    /// Written rather than advanced, and in blocks: Kestrel times each write's flush against MinResponseDataRate
    /// by the bytes it wrote, and each flush waits until the file has been sent that far. A single flush for
    /// the whole file would have to complete within the grace period, dropping any client that takes longer
    /// to download the file, however fast it reads.
    ///
    /// The blocks double from <see cref="FirstCountBlock"/> up to <see cref="ScratchMemory.Size"/>. Each flush the
    /// pump has not caught up with completes late, and Kestrel's writer then resumes the application through the
    /// thread pool (a work item, and a worker that spins for more): 1 MiB blocks made 42 of them per 100 MiB
    /// download and 350 per GiB. Doubling keeps Kestrel's meaning of the rate: a block is at most the first block
    /// larger than all the blocks before it, so the time Kestrel allows a client that stops reading is at most about
    /// twice what the bytes it did take allow.
    /// </summary>
    private async Task WriteFileCountThroughKestrelAsync(PipeWriter body, long length, CancellationToken cancellationToken)
    {
        ReadOnlyMemory<byte> scratch = SpliceOutputWriter.Scratch;
        int nextBlock = FirstCountBlock;
        for (long remaining = length; remaining > 0;)
        {
            int block = (int)Math.Min(nextBlock, remaining);
            FlushResult result = await body.WriteAsync(scratch[..block], cancellationToken).ConfigureAwait(false);
            remaining -= block;
            nextBlock = Math.Min(nextBlock * 2, scratch.Length);
            if (result.IsCompleted || result.IsCanceled)
            {
                // The connection ended (the client left, or the pump aborted it); Kestrel now drops what is
                // written, and the segment tells the caller what happened.
                return;
            }
        }
        long stuck = _connection.OutputWriter.BytesToSwallow;
        if (stuck != 0)
        {
            // Something between Kestrel's body writer and ours kept bytes back; what follows would be misplaced.
            throw new InvalidOperationException($"Kestrel's body writer did not pass {stuck} of the file's bytes through to SpliceTransport.");
        }
    }

    private void RecordSent(FileSegment segment)
    {
        if (segment.CopiedBecause is null)
        {
            _metrics.ZeroCopySent(segment.Count);
        }
        else
        {
            _metrics.FellBack(FallbackReasons.SendFileUnsupported);
            Log.ZeroCopyFallback(_logger, _connection.ConnectionId, segment.Path, $"sendfile said {segment.CopiedBecause}");
        }
    }

    /// <summary>Sets the sniffed Content-Type and writes the sniffed bytes through the normal path.</summary>
    private async Task<int> WriteSniffedPrefixAsync(FileDescriptorHandle file, string path, long offset, long length, CancellationToken cancellationToken)
    {
        byte[] prefix = new byte[(int)Math.Min(ContentSniffer.MaxLength, length)];
        int read = ReadPrefix(file, path, prefix, offset);
        _context.Response.ContentType = ContentSniffer.Sniff(prefix.AsSpan(0, read));
        await _kestrel.Writer.WriteAsync(prefix.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
        return read;
    }

    private int ReadPrefix(FileDescriptorHandle file, string path, byte[] buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            long read = _connection.Syscalls.ReadFile(file, buffer.AsSpan(total), offset + total).CountOrThrow("pread", path);
            if (read == 0)
            {
                break;
            }
            total += (int)read;
        }
        return total;
    }

    private bool HasNoBody()
    {
        int status = _context.Response.StatusCode;
        return HttpMethods.IsHead(_context.Request.Method) || status == StatusCodes.Status204NoContent || status == StatusCodes.Status304NotModified;
    }

    /// <summary>Why this connection cannot take raw file bytes, or null when it can.</summary>
    private string? ConnectionFallbackReason() => ZeroCopyEligibility.ConnectionFallbackReason(_context, _connection.IsTransportPipeOwned);

    /// <summary>Why the response's framing cannot take raw file bytes, or null when it can.</summary>
    private static string? FramingFallbackReason(HttpResponse response)
    {
        if (response.HasStarted)
        {
            return response.ContentLength is null ? FallbackReasons.Chunked : null;
        }
        return response.ContentLength is null && response.Headers.TransferEncoding.Count > 0 ? FallbackReasons.Chunked : null;
    }

    private Task FallBackAsync(string path, long offset, long? count, string reason, CancellationToken cancellationToken)
    {
        _metrics.FellBack(reason);
        Log.ZeroCopyFallback(_logger, _connection.ConnectionId, path, reason);
        return _kestrel.SendFileAsync(path, offset, count, cancellationToken);
    }

    /// <summary>
    /// Lets the file go once the pump is done with it: now, or when its segment completes. The cache keeps the
    /// descriptor only after a send that delivered the file: one that failed (a truncated file, a read error), was
    /// cut short (the client left, the send was canceled) or sent nothing leaves no descriptor open behind it.
    /// </summary>
    private void ReleaseWhenSent(CachedFile file, string path, FileSegment? segment)
    {
        OpenFileCache cache = _connection.Files;
        if (segment is null || segment.IsCompleted)
        {
            Release(cache, path, file, segment);
            return;
        }
        segment.Completion.ContinueWith(static (_, state) =>
        {
            var (cache, path, file, segment) = ((OpenFileCache, string, CachedFile, FileSegment))state!;
            Release(cache, path, file, segment);
        }, (cache, path, file, segment), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private static void Release(OpenFileCache cache, string path, CachedFile file, FileSegment? segment)
    {
        if (segment?.Completion is not { IsCompletedSuccessfully: true, Result: true })
        {
            cache.Forget(path, file);
        }
        file.Release();
    }
}
