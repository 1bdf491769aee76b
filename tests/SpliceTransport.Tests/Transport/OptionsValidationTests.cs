using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Every bounded option: a value just outside a bound stops the host at start-up with an exception that names
/// the option and the value; a value at a bound is valid, and where starting a host with it is cheap, serves.
/// </summary>
public class OptionsValidationTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 4096 + 7;
    private const int UploadSize = 64 * 1024;

    public static TheoryData<string, object, Action<SpliceTransportOptions>> OutOfRange => new()
    {
        { nameof(SpliceTransportOptions.ThreadCount), 0, o => o.ThreadCount = 0 },
        { nameof(SpliceTransportOptions.ThreadCount), -1, o => o.ThreadCount = -1 },
        { nameof(SpliceTransportOptions.ThreadCount), SpliceTransportOptions.MaxThreadCount + 1, o => o.ThreadCount = SpliceTransportOptions.MaxThreadCount + 1 },
        { nameof(SpliceTransportOptions.MaxReadBufferSize), 0L, o => o.MaxReadBufferSize = 0 },
        { nameof(SpliceTransportOptions.MaxReadBufferSize), -1L, o => o.MaxReadBufferSize = -1 },
        { nameof(SpliceTransportOptions.MaxWriteBufferSize), 0L, o => o.MaxWriteBufferSize = 0 },
        { nameof(SpliceTransportOptions.MaxWriteBufferSize), -1L, o => o.MaxWriteBufferSize = -1 },
        { nameof(SpliceTransportOptions.MaxSendFileChunkSize), 0L, o => o.MaxSendFileChunkSize = 0 },
        { nameof(SpliceTransportOptions.MaxSendFileChunkSize), 0x7ffff001L, o => o.MaxSendFileChunkSize = 0x7ffff001L },
        { nameof(SpliceTransportOptions.Backlog), 0, o => o.Backlog = 0 },
        { nameof(SpliceTransportOptions.Backlog), -5, o => o.Backlog = -5 },
        { nameof(SpliceTransportOptions.ConnectTimeout), TimeSpan.Zero, o => o.ConnectTimeout = TimeSpan.Zero },
        { nameof(SpliceTransportOptions.ConnectTimeout), TimeSpan.FromMilliseconds(-2), o => o.ConnectTimeout = TimeSpan.FromMilliseconds(-2) },
        { nameof(SpliceTransportOptions.ConnectTimeout), TimeSpan.FromMilliseconds(int.MaxValue + 1L), o => o.ConnectTimeout = TimeSpan.FromMilliseconds(int.MaxValue + 1L) },
        { nameof(SpliceTransportOptions.ApplicationSchedulingMode), (ApplicationSchedulingMode)42, o => o.ApplicationSchedulingMode = (ApplicationSchedulingMode)42 },
    };

    [Theory]
    [MemberData(nameof(OutOfRange))]
    public async Task AnOutOfRangeOptionFailsStartUpNamingItAndItsValue(string option, object value, Action<SpliceTransportOptions> configure)
    {
        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            () => SpliceTestHost.StartAsync(app => app.MapGet("/", () => "never"), configure));
        Assert.Equal(option, ex.ParamName);
        Assert.Equal(value, ex.ActualValue);
        string shown = value is TimeSpan timeSpan ? timeSpan.ToString() : $"{value:D}";
        Assert.StartsWith($"{nameof(SpliceTransportOptions)}.{option} is {shown}", ex.Message);
    }

    public static TheoryData<string, Action<SpliceTransportOptions>> AtABound => new()
    {
        { "ThreadCount = 1", o => o.ThreadCount = 1 },
        { "ThreadCount = MaxThreadCount", o => o.ThreadCount = SpliceTransportOptions.MaxThreadCount },
        { "MaxReadBufferSize = 1", o => o.MaxReadBufferSize = 1 },
        { "MaxReadBufferSize = null", o => o.MaxReadBufferSize = null },
        { "MaxWriteBufferSize = 1", o => o.MaxWriteBufferSize = 1 },
        { "MaxWriteBufferSize = null", o => o.MaxWriteBufferSize = null },
        { "MaxSendFileChunkSize = 1", o => o.MaxSendFileChunkSize = 1 },
        { "MaxSendFileChunkSize = 0x7ffff000", o => o.MaxSendFileChunkSize = 0x7ffff000 },
        { "Backlog = 1", o => o.Backlog = 1 },
        { "Backlog = int.MaxValue", o => o.Backlog = int.MaxValue },
        { "ConnectTimeout = 1 ms", o => o.ConnectTimeout = TimeSpan.FromMilliseconds(1) },
        { "ConnectTimeout = int.MaxValue ms", o => o.ConnectTimeout = TimeSpan.FromMilliseconds(int.MaxValue) },
        { "ConnectTimeout = infinite", o => o.ConnectTimeout = Timeout.InfiniteTimeSpan },
    };

    /// <summary>Every bound itself is valid, including the largest ThreadCount, which no test starts: 1024 threads.</summary>
    [Theory]
    [MemberData(nameof(AtABound))]
    public void AValueAtABoundIsValid(string _, Action<SpliceTransportOptions> configure)
    {
        var options = new SpliceTransportOptions();
        configure(options);
        options.Validate();
    }

    [Fact]
    public async Task LowerBoundsServe()
    {
        // One-byte buffers pause the pipes after every byte; one-byte sendfile chunks make a call per byte.
        await AssertServesAsync(o =>
        {
            o.ThreadCount = 1;
            o.Backlog = 1;
            o.MaxReadBufferSize = 1;
            o.MaxWriteBufferSize = 1;
            o.MaxSendFileChunkSize = 1;
        });
    }

    [Fact]
    public async Task UpperBoundsServe()
    {
        // The kernel lowers the backlog to net.core.somaxconn; sendfile gets the most it transfers in one call.
        await AssertServesAsync(o =>
        {
            o.Backlog = SpliceTransportOptions.MaxBacklog;
            o.MaxReadBufferSize = null;
            o.MaxWriteBufferSize = null;
            o.MaxSendFileChunkSize = SpliceTransportOptions.MaxSendFileChunkSizeLimit;
        });
    }

    /// <summary>A zero-copy file, and an upload echoed back, on one connection.</summary>
    private async Task AssertServesAsync(Action<SpliceTransportOptions> configure)
    {
        string path = files.Get("bounds/file.bin", FileSize);
        await using var host = await SpliceTestHost.StartAsync(
            app =>
            {
                app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path, context.RequestAborted));
                app.MapPost("/echo", async context =>
                {
                    using var buffer = new MemoryStream();
                    await context.Request.Body.CopyToAsync(buffer);
                    await context.Response.Body.WriteAsync(buffer.ToArray());
                });
            },
            configure);
        using var client = host.CreateClient();

        using var fileResponse = await client.GetAsync("/file").WaitAsync(Waits.Response);
        TransportAssert.ServedBySplice(fileResponse);
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await fileResponse.Content.ReadAsByteArrayAsync()));

        byte[] upload = new byte[UploadSize];
        new Random(UploadSize).NextBytes(upload);
        using var echoResponse = await client.PostAsync("/echo", new ByteArrayContent(upload)).WaitAsync(Waits.Response);
        Assert.Equal(upload, await echoResponse.Content.ReadAsByteArrayAsync());

        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the file went zero-copy");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
