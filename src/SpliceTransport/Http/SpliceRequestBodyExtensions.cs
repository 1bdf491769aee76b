using Microsoft.Win32.SafeHandles;
using SpliceTransport;
using SpliceTransport.Http;

namespace Microsoft.AspNetCore.Http;

/// <summary>
/// Saves a request body into a file in one call. On SpliceTransport the body may be spliced from the socket into
/// the file; on every other transport (Kestrel's sockets included), and wherever splicing is not safe, it is
/// streamed through <see cref="HttpRequest.BodyReader"/>, with the same result. <see cref="UploadResult"/> says which.
/// </summary>
public static class SpliceRequestBodyExtensions
{
    /// <summary>
    /// Writes the whole request body into <paramref name="file"/> at offset 0, whatever the handle's mode or
    /// position (positional writes: <see cref="FileMode.Append"/> does not make them append), and does not truncate
    /// the file. Completes when the last byte is written.
    /// </summary>
    /// <param name="request">The request whose body is saved.</param>
    /// <param name="file">A file opened for writing; the caller keeps it, and closes it.</param>
    /// <param name="cancellationToken">Cancels the wait for the body (pass <see cref="HttpContext.RequestAborted"/> when nothing else applies).</param>
    /// <returns>How many bytes were written, and whether they were spliced.</returns>
    /// <exception cref="IOException">The client disconnected mid-body or the request was aborted (also when
    /// <paramref name="cancellationToken"/> is RequestAborted), or the disk is full (the message names ENOSPC or
    /// EDQUOT and the file).</exception>
    /// <exception cref="BadHttpRequestException">Kestrel refused the body: over MaxRequestBodySize (413),
    /// incomplete, or slower than MinRequestBodyDataRate.</exception>
    public static Task<UploadResult> SaveBodyToFileAsync(this HttpRequest request, SafeFileHandle file, CancellationToken cancellationToken) =>
        RequestBodyFileWriter.SaveAsync(request, file, cancellationToken);

    /// <summary>
    /// Saves the whole request body as <paramref name="path"/>, flushed to disk: see
    /// <see cref="SaveBodyToFileAsync(HttpRequest, string, bool, CancellationToken)"/>.
    /// </summary>
    /// <param name="request">The request whose body is saved.</param>
    /// <param name="path">The file to create or replace.</param>
    /// <param name="cancellationToken">Cancels the wait for the body (pass <see cref="HttpContext.RequestAborted"/> when nothing else applies).</param>
    /// <returns>How many bytes were written, and whether they were spliced.</returns>
    public static Task<UploadResult> SaveBodyToFileAsync(this HttpRequest request, string path, CancellationToken cancellationToken) =>
        RequestBodyFileWriter.SaveAsync(request, path, flushToDisk: true, cancellationToken);

    /// <summary>
    /// Saves the whole request body as <paramref name="path"/>. The body goes into a temporary file in the same
    /// folder, which is renamed into place only once the whole body is in it: an existing file is replaced
    /// atomically or not at all, and on any failure (client gone, disk full, cancellation) the temporary file is
    /// deleted. Nothing is created when Kestrel refuses the body up front (a Content-Length over MaxRequestBodySize).
    /// </summary>
    /// <param name="request">The request whose body is saved.</param>
    /// <param name="path">The file to create or replace; its folder must exist.</param>
    /// <param name="flushToDisk">fsync the file before the rename, and the folder after it, so that the new file
    /// survives a crash once the call has returned.</param>
    /// <param name="cancellationToken">Cancels the wait for the body (pass <see cref="HttpContext.RequestAborted"/> when nothing else applies).</param>
    /// <returns>How many bytes were written, and whether they were spliced.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty or names a folder.</exception>
    /// <exception cref="IOException">The client disconnected mid-body or the request was aborted (also when
    /// <paramref name="cancellationToken"/> is RequestAborted), or the disk is full (the message names ENOSPC or
    /// EDQUOT and the path).</exception>
    /// <exception cref="BadHttpRequestException">Kestrel refused the body: over MaxRequestBodySize (413),
    /// incomplete, or slower than MinRequestBodyDataRate.</exception>
    public static Task<UploadResult> SaveBodyToFileAsync(this HttpRequest request, string path, bool flushToDisk, CancellationToken cancellationToken) =>
        RequestBodyFileWriter.SaveAsync(request, path, flushToDisk, cancellationToken);
}
