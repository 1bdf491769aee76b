using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using SpliceTransport.Interop;

namespace SpliceTransport.Http;

/// <summary>
/// Saves a request body into a file (the work behind <c>SaveBodyToFileAsync</c>). The body is read through
/// <see cref="HttpRequest.BodyReader"/>, so Kestrel frames, counts and limits it as for any other read
/// (MaxRequestBodySize, MinRequestBodyDataRate, 100-continue, keep-alive, RequestAborted), and every body wrapper
/// (decompression, a replaced <see cref="HttpRequest.Body"/>) applies; each read is written with one pwritev.
///
/// Invariants:
/// <list type="bullet">
/// <item>The first body read comes before any file is touched: a Content-Length over MaxRequestBodySize is a 413
/// with nothing created, and the 100 of <c>Expect: 100-continue</c> goes out only when the body is wanted.</item>
/// <item>The path form writes a temporary file beside the target and renames it into place only once the whole
/// body is in it (and, when asked, on disk): the target is replaced atomically or not at all, and the temporary
/// file is deleted on every failure.</item>
/// <item>A full disk (ENOSPC, EDQUOT) is an <see cref="IOException"/> naming the errno and the file.</item>
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

    public static async Task<UploadResult> SaveAsync(HttpRequest request, SafeFileHandle file, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(file);
        if (file.IsInvalid || file.IsClosed)
        {
            throw new ArgumentException("The file handle is closed or invalid.", nameof(file));
        }
        string reason = ChooseFallback(request.HttpContext);
        try
        {
            PipeReader body = request.BodyReader;
            ReadResult first = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
            long written = await CopyAsync(body, first, file, target: null, cancellationToken).ConfigureAwait(false);
            return new UploadResult(written, reason);
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
        string reason = ChooseFallback(request.HttpContext);
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
        try
        {
            long written;
            using (SafeFileHandle file = File.OpenHandle(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                written = await CopyAsync(body, first, file, target, cancellationToken).ConfigureAwait(false);
                if (flushToDisk)
                {
                    FlushToDisk(file, target);
                }
            }
            File.Move(temporary, target, overwrite: true);
            if (flushToDisk)
            {
                // The rename is durable only once the folder's entry is on disk too.
                FlushFolder(folder);
            }
            return new UploadResult(written, reason);
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
    /// Writes the body from <paramref name="result"/> (its first read) to the end into <paramref name="file"/>
    /// from offset 0; returns the number of bytes written. Each read's segments go out in one pwritev, and are
    /// released to Kestrel only once written.
    /// </summary>
    private static async Task<long> CopyAsync(PipeReader body, ReadResult result, SafeFileHandle file, string? target, CancellationToken cancellationToken)
    {
        var segments = new List<ReadOnlyMemory<byte>>();
        long offset = 0;
        while (true)
        {
            ReadOnlySequence<byte> buffer = result.Buffer;
            if (!buffer.IsEmpty)
            {
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
                offset += buffer.Length;
            }
            body.AdvanceTo(buffer.End);
            if (result.IsCompleted)
            {
                return offset;
            }
            if (result.IsCanceled)
            {
                throw new OperationCanceledException("The read of the request body was canceled.");
            }
            result = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Why this body will not be spliced (counted and logged here, once per body), as one of the
    /// <see cref="UploadFallbackReasons"/>.
    /// </summary>
    private static string ChooseFallback(HttpContext context)
    {
        string reason = context.Features.Get<ISpliceConnectionFeature>() is not { } connection
            ? UploadFallbackReasons.OtherTransport
            : ZeroCopyEligibility.ConnectionFallbackReason(context, connection.IsTransportPipeOwned)
                ?? (context.Request.ContentLength is null ? UploadFallbackReasons.Chunked : UploadFallbackReasons.ReceiveSpliceUnavailable);
        IServiceProvider? services = context.RequestServices;
        // The transport's meter exists only where UseSpliceTransport registered it.
        services?.GetService<SpliceMetrics>()?.UploadFellBack(reason);
        if (services?.GetService<ILoggerFactory>() is { } loggers)
        {
            Log.UploadFallback(loggers.CreateLogger("SpliceTransport.Http"), context.Connection.Id, reason);
        }
        return reason;
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
    private static void FlushFolder(string folder)
    {
        int fd = LibC.ThrowIfFailed(LibC.open(folder, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC), "open", folder);
        using var handle = new FileDescriptorHandle(fd);
        LibC.ThrowIfFailed(LibC.fsync(handle), "fsync", folder);
    }

    /// <summary>The path a caller's handle was opened with, for error messages (the handle does not say it).</summary>
    private static string NameOf(SafeFileHandle file) =>
        new FileInfo($"/proc/self/fd/{file.DangerousGetHandle()}").LinkTarget ?? "the request body's file";
}
