namespace SpliceTransport.Http;

/// <summary>
/// Why a file went through Kestrel's normal (copying) path: the values of the
/// <c>splice.sendfile.fallback.reason</c> attribute on the <c>splice.sendfile.fallbacks</c> counter, and of the
/// Debug log that goes with it. Lower_snake_case, as OpenTelemetry asks of attribute values.
/// </summary>
internal static class FallbackReasons
{
    /// <summary>HTTP/2 or HTTP/3: frames must wrap the bytes, so they pass through user space.</summary>
    public const string Protocol = "protocol";

    /// <summary>TLS: the bytes must be encrypted in user space (this kernel has no kTLS).</summary>
    public const string Tls = "tls";

    /// <summary>Connection middleware (connection logging, a custom one) replaced the transport pipe.</summary>
    public const string TransportWrapped = "transport_wrapped";

    /// <summary>The response already started without a Content-Length (chunked), so Kestrel must frame the bytes.</summary>
    public const string Chunked = "chunked";

    /// <summary>Not a regular file (a FIFO, a device, a socket): sendfile cannot read it, or its size is unknown.</summary>
    public const string NotRegularFile = "not_regular_file";

    /// <summary>A file of a pseudo file system (/proc, /sys): its size says nothing about its content.</summary>
    public const string PseudoFile = "pseudo_file";

    /// <summary>sendfile refused the file (EINVAL, ENOSYS or EOPNOTSUPP) before sending a byte; the transport copied it.</summary>
    public const string SendFileUnsupported = "sendfile_unsupported";
}
