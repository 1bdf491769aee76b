using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Invalid options stop the host at start-up with an exception that names the option.</summary>
public class OptionsValidationTests
{
    public static TheoryData<string, Action<SpliceTransportOptions>> InvalidOptions => new()
    {
        { nameof(SpliceTransportOptions.ThreadCount), o => o.ThreadCount = 0 },
        { nameof(SpliceTransportOptions.ThreadCount), o => o.ThreadCount = -1 },
        { nameof(SpliceTransportOptions.MaxReadBufferSize), o => o.MaxReadBufferSize = -1 },
        { nameof(SpliceTransportOptions.MaxWriteBufferSize), o => o.MaxWriteBufferSize = -1 },
        { nameof(SpliceTransportOptions.Backlog), o => o.Backlog = 0 },
        { nameof(SpliceTransportOptions.Backlog), o => o.Backlog = -5 },
        { nameof(SpliceTransportOptions.MaxSendFileChunkSize), o => o.MaxSendFileChunkSize = 0 },
        { nameof(SpliceTransportOptions.MaxSendFileChunkSize), o => o.MaxSendFileChunkSize = -1 },
        { nameof(SpliceTransportOptions.ApplicationSchedulingMode), o => o.ApplicationSchedulingMode = (ApplicationSchedulingMode)42 },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task AnInvalidOptionFailsStartUpNamingIt(string option, Action<SpliceTransportOptions> configure)
    {
        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            () => SpliceTestHost.StartAsync(app => app.MapGet("/", () => "never"), configure));
        Assert.Equal(option, ex.ParamName);
        Assert.Contains(option, ex.Message);
    }

    [Fact]
    public async Task BoundaryValuesAreValidAndServe()
    {
        // Zero buffer limits mean "no limit" for the pipes, like null; one thread and a backlog of one are legal.
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "ok"),
            o =>
            {
                o.ThreadCount = 1;
                o.Backlog = 1;
                o.MaxReadBufferSize = 0;
                o.MaxWriteBufferSize = null;
                o.MaxSendFileChunkSize = 1;
            });
        using var client = host.CreateClient();
        using var response = await client.GetAsync("/");
        TransportAssert.ServedBySplice(response);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
    }
}
