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
/// SpliceTransport, ahead of all other middleware, so that middleware wrapping the body wraps ours.
/// </summary>
internal sealed class SpliceStartupFilter(IOptions<SpliceTransportOptions> options, SpliceMetrics metrics, ILoggerFactory loggerFactory) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next)
    {
        SpliceTransportOptions transportOptions = options.Value;
        if (!transportOptions.ZeroCopyFiles)
        {
            return next;
        }
        ILogger logger = loggerFactory.CreateLogger("SpliceTransport.Http");
        return app =>
        {
            app.Use((context, nextMiddleware) =>
            {
                if (context.Features.Get<IZeroCopyOutputFeature>() is { } connection
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
