using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>Keeps every log entry of a host, so tests can assert what was (not) logged.</summary>
public sealed class LogCollector : ILoggerProvider
{
    public sealed record Entry(string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception)
    {
        public override string ToString() => $"{Level} {Category}[{EventId.Id}] {Message} {Exception}";
    }

    private readonly ConcurrentQueue<Entry> _entries = new();

    public IReadOnlyList<Entry> Entries => _entries.ToArray();

    public IEnumerable<Entry> AtLeast(LogLevel level) => _entries.Where(e => e.Level >= level);

    /// <summary>Fails with the offending lines if anything at Error or above was logged.</summary>
    public void AssertNoErrors()
    {
        var errors = AtLeast(LogLevel.Error).ToList();
        Assert.True(errors.Count == 0, "Errors were logged:\n" + string.Join("\n", errors));
    }

    /// <summary>Fails if Kestrel complained about the Content-Length of a response.</summary>
    public void AssertNoContentLengthMismatch()
    {
        var mismatches = _entries.Where(e => e.Message.Contains("Content-Length mismatch", StringComparison.OrdinalIgnoreCase)).ToList();
        Assert.True(mismatches.Count == 0, "Kestrel logged a Content-Length mismatch:\n" + string.Join("\n", mismatches));
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCollector owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => owner._entries.Enqueue(new Entry(category, logLevel, eventId, formatter(state, exception), exception));
    }
}
