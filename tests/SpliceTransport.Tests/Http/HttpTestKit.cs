using System.Collections.Concurrent;
using System.Diagnostics;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>Bounds for every wait in the Http tests: nothing may hang a test run.</summary>
internal static class Waits
{
    /// <summary>Long enough for a 100 MiB response on a busy 2-core machine; short enough to fail a hang quickly.</summary>
    public static readonly TimeSpan Response = TimeSpan.FromSeconds(60);

    /// <summary>For things that should happen "at once" (a close, a cancellation): generous, still bounded.</summary>
    public static readonly TimeSpan Short = TimeSpan.FromSeconds(10);

    /// <summary>For raw connections: connect and send at once, each receive may wait as long as a response.</summary>
    public static readonly RawHttpTimeouts Raw = new(Short, Response);
}

/// <summary>
/// Files for one test class, created once (a 100 MiB file takes a moment) and deleted with the class.
/// </summary>
public sealed class FileFixture : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<string>> _files = new();

    public TestFiles Files { get; } = new();

    public string Root => Files.Root;

    /// <summary>A file of random bytes named <paramref name="name"/> with <paramref name="size"/> bytes, made on first use.</summary>
    public string Get(string name, long size) =>
        _files.GetOrAdd(name, n => new Lazy<string>(() => Files.Create(n, size))).Value;

    public void Dispose() => Files.Dispose();
}

/// <summary>Runs the curl command-line client (installed by .ci/run), with a bounded wait.</summary>
internal static class Curl
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static async Task<Result> RunAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("curl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add("--silent");
        start.ArgumentList.Add("--show-error");
        start.ArgumentList.Add("--max-time");
        start.ArgumentList.Add("60");
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(Waits.Response);
        }
        catch (TimeoutException)
        {
            process.Kill();
            throw;
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Downloads <paramref name="url"/> into <paramref name="output"/>; returns the HTTP status curl saw.</summary>
    public static async Task<int> DownloadAsync(string url, string output, params string[] extra)
    {
        Result result = await RunAsync([.. extra, "--output", output, "--write-out", "%{http_code}", url]);
        Assert.True(result.ExitCode == 0, $"curl exited with {result.ExitCode}: {result.Stderr}");
        return int.Parse(result.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}

/// <summary>Counts this process's open descriptors on a file, through /proc/self/fd.</summary>
internal static class OpenFiles
{
    public static int Count(string path)
    {
        int count = 0;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && (target == path || target == path + " (deleted)"))
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // Closed between the listing and the readlink.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return count;
    }

    /// <summary>Polls until no descriptor is open on <paramref name="path"/>; returns the last count seen.</summary>
    public static async Task<int> WaitUntilClosedAsync(string path, TimeSpan timeout)
    {
        await Poll.UntilAsync(() => Count(path) == 0, timeout);
        return Count(path);
    }
}

/// <summary>Small helpers for comparing bodies.</summary>
internal static class Bytes
{
    public static byte[] Read(string path, long offset, int count)
    {
        using var file = File.OpenRead(path);
        file.Position = offset;
        byte[] result = new byte[count];
        file.ReadExactly(result);
        return result;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds (metrics are recorded just after the response leaves).</summary>
    public static Task EventuallyAsync(Func<bool> condition, string what) => EventuallyAsync(condition, () => what);

    /// <summary>As above, with a description made when it fails (e.g. from the logs at that moment).</summary>
    public static Task EventuallyAsync(Func<bool> condition, Func<string> what) => Poll.EventuallyAsync(condition, what, Waits.Short);
}
