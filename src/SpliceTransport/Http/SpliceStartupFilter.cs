using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SpliceTransport.Transport;

namespace SpliceTransport.Http;

/// <summary>
/// Puts the zero-copy <see cref="IHttpResponseBodyFeature"/> on every request that arrived through
/// SpliceTransport, ahead of all other middleware, so that middleware wrapping the body wraps ours; and records, for
/// every request, Kestrel's body reader and Content-Length, so that an upload can tell a wrapped or re-framed body.
/// </summary>
internal sealed class SpliceStartupFilter(IOptions<SpliceTransportOptions> options, SpliceMetrics metrics, ILoggerFactory loggerFactory) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next)
    {
        SpliceTransportOptions transportOptions = options.Value;
        bool zeroCopyFiles = transportOptions.ZeroCopyFiles;
        bool zeroCopyUploads = transportOptions.ZeroCopyUploads;
        if (!zeroCopyFiles && !zeroCopyUploads)
        {
            return next; // Nothing to do per request.
        }
        ILogger logger = loggerFactory.CreateLogger("SpliceTransport.Http");
        return app =>
        {
            app.Use((context, nextMiddleware) =>
            {
                if (zeroCopyUploads && context.Features.Get<IZeroCopyInputFeature>() is { } input)
                {
                    // Kestrel's own body reader and framing, before any middleware could wrap the body or change its
                    // Content-Length: an upload that later finds either different must not be spliced. Every request,
                    // so that an earlier request's never stands for this one's.
                    long? contentLength = context.Request.ContentLength;
                    input.RecordRequestBodyAtStart(contentLength > 0 ? context.Request.BodyReader : null, contentLength);
                }
                if (zeroCopyFiles
                    && context.Features.Get<IZeroCopyOutputFeature>() is { } connection
                    && context.Features.Get<IHttpResponseBodyFeature>() is { } kestrelBody)
                {
                    context.Features.Set<IHttpResponseBodyFeature>(
                        new SpliceResponseBodyFeature(kestrelBody, connection, context, transportOptions, metrics, logger));
                }
                return nextMiddleware(context);
            });
            next(app);
        };
    }
}
