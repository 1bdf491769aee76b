namespace SpliceTransport;

/// <summary>
/// What <c>SaveBodyToFileAsync</c> did with a request body: how many bytes it wrote, and whether they were
/// spliced from the socket into the file (never entering managed memory) or, if not, why not.
/// </summary>
public sealed class UploadResult
{
    internal UploadResult(long bytesWritten, string? fallbackReason)
    {
        BytesWritten = bytesWritten;
        FallbackReason = fallbackReason;
    }

    /// <summary>The number of body bytes written to the file: the whole body, since the call returns only when it has arrived.</summary>
    public long BytesWritten { get; }

    /// <summary>True when the body went from the socket to the file with splice(2), without being copied through Kestrel.</summary>
    public bool ZeroCopy => FallbackReason is null;

    /// <summary>
    /// Why the body was copied through Kestrel's body reader instead of spliced, in lower_snake_case (for example
    /// <c>chunked</c>, <c>tls</c>, <c>other_transport</c>), as in the <c>splice.upload.fallbacks</c> metric;
    /// null when <see cref="ZeroCopy"/> is true.
    /// </summary>
    public string? FallbackReason { get; }
}
