using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;

namespace SpliceTransport.Http;

/// <summary>
/// When a request's connection can move raw bytes past Kestrel's pipes, in either direction: the one test that
/// file responses (<see cref="SpliceResponseBodyFeature"/>) and uploads (<see cref="RequestBodyFileWriter"/>) share.
/// </summary>
internal static class ZeroCopyEligibility
{
    /// <summary>
    /// Why the connection of <paramref name="context"/> cannot take or give raw bytes, or null when it can:
    /// HTTP/2 and HTTP/3 frame every byte, and TLS or connection middleware replaced the transport pipe.
    /// </summary>
    public static string? ConnectionFallbackReason(HttpContext context, bool isTransportPipeOwned)
    {
        string protocol = context.Request.Protocol;
        if (!HttpProtocol.IsHttp11(protocol) && !HttpProtocol.IsHttp10(protocol))
        {
            return FallbackReasons.Protocol;
        }
        if (!isTransportPipeOwned)
        {
            return context.Features.Get<ITlsHandshakeFeature>() is not null ? FallbackReasons.Tls : FallbackReasons.TransportWrapped;
        }
        return null;
    }
}
