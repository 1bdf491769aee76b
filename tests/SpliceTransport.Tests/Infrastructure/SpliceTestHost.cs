using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// A real Kestrel on real sockets, on SpliceTransport (or, for comparisons, on Kestrel's socket transport).
/// Every response carries <see cref="TransportHeader"/>, "splice" when the request arrived through our
/// transport, so each test can assert which transport served it.
/// </summary>
public sealed class SpliceTestHost : IAsyncDisposable
{
    public const string TransportHeader = "X-Test-Transport";

    private SpliceTestHost(WebApplication app, MetricsRecorder metrics, LogCollector logs)
    {
        App = app;
        Metrics = metrics;
        Logs = logs;
        Addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToList();
    }

    public WebApplication App { get; }

    public IServiceProvider Services => App.Services;

    public MetricsRecorder Metrics { get; }

    public LogCollector Logs { get; }

    /// <summary>The bound addresses, with real ports in place of port 0.</summary>
    public IReadOnlyList<string> Addresses { get; }

    /// <summary>The first bound address as a URI.</summary>
    public Uri BaseAddress => new(Addresses[0]);

    /// <summary>The port of the first bound TCP address.</summary>
    public int Port => BaseAddress.Port;

    public static Task<SpliceTestHost> StartAsync(
        Action<WebApplication> configureApp,
        Action<SpliceTransportOptions>? configureTransport = null,
        Action<WebApplicationBuilder>? configureBuilder = null,
        string[]? urls = null,
        bool useSplice = true)
        => StartAsync(configureApp, configureTransport, configureBuilder, urls, useSplice, platformCheck: null);

    internal static async Task<SpliceTestHost> StartAsync(
        Action<WebApplication> configureApp,
        Action<SpliceTransportOptions>? configureTransport,
        Action<WebApplicationBuilder>? configureBuilder,
        string[]? urls,
        bool useSplice,
        Func<bool>? platformCheck)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        var logs = new LogCollector();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.Logging.AddProvider(logs);
        builder.WebHost.UseKestrel();
        builder.WebHost.UseUrls(urls ?? ["http://127.0.0.1:0"]);
        if (useSplice)
        {
            if (platformCheck is null)
            {
                builder.WebHost.UseSpliceTransport(configureTransport ?? (_ => { }));
            }
            else
            {
                builder.WebHost.UseSpliceTransport(configureTransport ?? (_ => { }), platformCheck);
            }
        }
        configureBuilder?.Invoke(builder);

        WebApplication app = builder.Build();
        var metrics = new MetricsRecorder(app.Services);
        app.Use((context, next) =>
        {
            context.Response.Headers[TransportHeader] = context.Features.Get<ISpliceConnectionFeature>() is null ? "other" : "splice";
            return next(context);
        });
        configureApp(app);
        try
        {
            await app.StartAsync();
        }
        catch
        {
            metrics.Dispose();
            await app.DisposeAsync();
            throw;
        }
        return new SpliceTestHost(app, metrics, logs);
    }

    /// <summary>An HttpClient for this host that trusts any certificate (tests make self-signed ones).</summary>
    public HttpClient CreateClient(Version? version = null, HttpVersionPolicy policy = HttpVersionPolicy.RequestVersionExact)
    {
        var handler = new SocketsHttpHandler
        {
            SslOptions = { RemoteCertificateValidationCallback = static (_, _, _, _) => true },
            AutomaticDecompression = DecompressionMethods.None,
        };
        return new HttpClient(handler)
        {
            BaseAddress = BaseAddress,
            DefaultRequestVersion = version ?? HttpVersion.Version11,
            DefaultVersionPolicy = policy,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await App.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        }
        finally
        {
            await App.DisposeAsync();
            Metrics.Dispose();
        }
    }
}

/// <summary>Assertions shared by the tests.</summary>
public static class TransportAssert
{
    /// <summary>The response came through SpliceTransport, not Kestrel's socket transport.</summary>
    public static void ServedBySplice(HttpResponseMessage response)
    {
        Assert.True(response.Headers.TryGetValues(SpliceTestHost.TransportHeader, out var values), $"The response has no {SpliceTestHost.TransportHeader} header.");
        Assert.Equal("splice", Assert.Single(values));
    }
}
