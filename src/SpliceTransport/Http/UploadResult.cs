namespace SpliceTransport;

/// <summary>
/// What <c>SaveBodyToFileAsync</c> did with a request body: how many bytes it wrote, how many of them were spliced
/// from the socket into the file (never entering managed memory), and, when not all of what could be was, why not.
/// </summary>
public sealed class UploadResult
{
    internal UploadResult(long bytesWritten, long splicedBytes, string? fallbackReason)
    {
        BytesWritten = bytesWritten;
        SplicedBytes = splicedBytes;
        FallbackReason = fallbackReason;
    }

    /// <summary>The number of body bytes written to the file: the whole body, since the call returns only when it has arrived.</summary>
    public long BytesWritten { get; }

    /// <summary>
    /// The body bytes that went from the socket into the file through a kernel pipe with splice(2). The bytes that had
    /// already arrived when the call began (read with the request's head) are always copied, so a spliced body has
    /// <c>SplicedBytes</c> a little below <see cref="BytesWritten"/>; 0 when nothing was spliced.
    /// </summary>
    public long SplicedBytes { get; }

    /// <summary>True when the rest of the body, after what had already arrived, went from the socket to the file with splice(2).</summary>
    public bool ZeroCopy => FallbackReason is null;

    /// <summary>
    /// Why the body (or the rest of it, from where splicing stopped) was copied through Kestrel's body reader instead,
    /// in lower_snake_case (for example <c>chunked</c>, <c>tls</c>, <c>small_body</c>, <c>other_transport</c>), as in the
    /// <c>splice.upload.fallbacks</c> metric; null when <see cref="ZeroCopy"/> is true.
    /// </summary>
    public string? FallbackReason { get; }
}
