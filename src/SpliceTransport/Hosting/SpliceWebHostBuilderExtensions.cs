using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SpliceTransport;
using SpliceTransport.Http;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>Extension methods that put SpliceTransport under Kestrel.</summary>
public static class SpliceWebHostBuilderExtensions
{
    /// <summary>
    /// Serves Kestrel's connections through SpliceTransport (epoll event loops, non-blocking sockets,
    /// sendfile for file responses). On anything but 64-bit Linux this changes nothing and logs a warning.
    /// Calling it more than once registers the transport once.
    /// </summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <returns>The same builder.</returns>
    public static IWebHostBuilder UseSpliceTransport(this IWebHostBuilder hostBuilder) =>
        UseSpliceTransport(hostBuilder, static _ => { });

    /// <summary>
    /// Serves Kestrel's connections through SpliceTransport, with options. On anything but 64-bit Linux this
    /// changes nothing and logs a warning. Calling it more than once registers the transport once; every
    /// call's <paramref name="configureOptions"/> applies, in the order of the calls.
    /// </summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <param name="configureOptions">Sets <see cref="SpliceTransportOptions"/>; validated when the server starts.</param>
    /// <returns>The same builder.</returns>
    public static IWebHostBuilder UseSpliceTransport(this IWebHostBuilder hostBuilder, Action<SpliceTransportOptions> configureOptions) =>
        UseSpliceTransport(hostBuilder, configureOptions, IsSupportedPlatform);

    /// <summary>The platform check, injectable so tests can play another operating system.</summary>
    internal static IWebHostBuilder UseSpliceTransport(this IWebHostBuilder hostBuilder, Action<SpliceTransportOptions> configureOptions, Func<bool> isSupportedPlatform)
    {
        ArgumentNullException.ThrowIfNull(hostBuilder);
        ArgumentNullException.ThrowIfNull(configureOptions);
        return hostBuilder.ConfigureServices(services =>
        {
            if (!isSupportedPlatform())
            {
                services.AddHostedService<UnsupportedPlatformWarning>();
                return;
            }
            services.Configure(configureOptions);
            if (IsRegistered(services))
            {
                // A second call only adds its options: a second factory would bind every end point twice,
                // and a second startup filter would install the body feature twice.
                return;
            }
            services.TryAddSingleton<SpliceMetrics>();
            services.TryAddSingleton<SpliceConnectionListenerFactory>();
            // Added, not tried: Kestrel asks the last registered factory first, so this one wins over the
            // socket transport that UseKestrel registered, which stays as the fallback for what we cannot bind.
            services.AddSingleton<IConnectionListenerFactory>(static provider => provider.GetRequiredService<SpliceConnectionListenerFactory>());
            // Outbound connections on the same loops. Tried: an IConnectionFactory the app registered stays.
            services.TryAddSingleton(static provider => new SpliceConnectionFactory(provider.GetRequiredService<SpliceConnectionListenerFactory>()));
            services.TryAddSingleton<IConnectionFactory>(static provider => provider.GetRequiredService<SpliceConnectionFactory>());
            // First, so that it is the outermost startup filter: middleware that wraps the response body
            // (compression, caching) then wraps our body feature, not the other way round.
            services.Insert(0, ServiceDescriptor.Transient<IStartupFilter, SpliceStartupFilter>());
        });
    }

    /// <summary>Whether an earlier call already put the transport in <paramref name="services"/>.</summary>
    private static bool IsRegistered(IServiceCollection services)
    {
        foreach (ServiceDescriptor descriptor in services)
        {
            if (descriptor.ServiceType == typeof(SpliceConnectionListenerFactory))
            {
                return true;
            }
        }
        return false;
    }

    private static bool IsSupportedPlatform() => OperatingSystem.IsLinux() && Environment.Is64BitProcess;

    /// <summary>Logs, once at start-up, that SpliceTransport stayed out of the way.</summary>
    private sealed class UnsupportedPlatformWarning(ILoggerFactory loggerFactory) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            Log.UnsupportedPlatform(loggerFactory.CreateLogger("SpliceTransport"));
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
