# events() resumes with Last-Event-ID when the connection drops mid-stream: a tiny TCP
# proxy in a child process cuts the first two connections in the middle of an SSE frame
# (HTTP::Tiny silently repeats a broken GET once, from the start: that is the second),
# and every event must still arrive exactly once.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempfile);
use POSIX ();
use Gateway::Client;
use IO::Select;
use IO::Socket::INET;
use Test::More;
use TestGateway qw(gateway_url need_gateway);

need_gateway();
my ($upstream_host, $upstream_port) = gateway_url() =~ m{^http://([^:/]+):([0-9]+)} or plan skip_all => 'needs an http://host:port GATEWAY_URL';

my (undef, $heads_file) = tempfile(UNLINK => 1);
my ($proxy_pid, $proxy_port) = start_proxy($upstream_host, $upstream_port, $heads_file);
END { local $?; if ($proxy_pid) { kill 'TERM', $proxy_pid; waitpid $proxy_pid, 0 } }

my $direct  = Gateway::Client->new(base_url => gateway_url());
my $proxied = Gateway::Client->new(base_url => "http://127.0.0.1:$proxy_port", timeout => 30);

my $job = $direct->submit('report.generate', { title => 'cut', sections => 4, seconds_per_section => 0.3 })->{job};
my @seen;
my $answer = $proxied->events($job->{id}, on_event => sub { push @seen, $_[0] });

ok $answer->{ok}, 'the stream reached its end' or diag explain $answer;
my @seqs = map { $_->{seq} } @seen;
is_deeply \@seqs, [1 .. 7], 'every seq once, in order' or diag explain \@seen;
is_deeply [map { $_->{type} } @seen], [qw(queued started progress progress progress progress result)], 'the types';
is_deeply $seen[-1]{data}{sections}, [map {"cut: section $_ of 4"} 1 .. 4], 'the result';

my $heads = do { open my $file, '<', $heads_file or die $!; local $/; <$file> };
diag $heads if $ENV{TEST_VERBOSE};
like $heads, qr/^Last-Event-ID: 2\r?$/mi, 'it resumed after the last complete event (seq 2)';

done_testing;

# A proxy to the gateway: the first two connections are cut right after the "event:
# progress" line of the first progress frame (before its data); later ones pass through,
# their request heads appended to $heads_file.
sub start_proxy {
    my ($host, $port, $heads_file) = @_;
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1)
        or die "cannot listen: $!";
    my $pid = fork // die "cannot fork: $!";
    return ($pid, $listener->sockport) if $pid;

    $SIG{CHLD} = 'IGNORE';    # no zombies from the relays
    my $connections = 0;
    while (my $client = $listener->accept) {
        my $cut = ++$connections <= 2;
        my $relay = fork // die "cannot fork: $!";
        if ($relay == 0) {
            relay($client, $host, $port, $cut, $heads_file);
            POSIX::_exit(0);    # no END blocks or temp-file clean-up in the children
        }
        close $client;
    }
    POSIX::_exit(0);
}

sub relay {
    my ($client, $host, $port, $cut, $heads_file) = @_;
    my $server = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "cannot connect: $!";
    my $select = IO::Select->new($client, $server);
    my ($from_server, $head_logged, $to_server) = ('', 0, '');
    while (my @ready = $select->can_read(60)) {
        for my $socket (@ready) {
            my $read = sysread $socket, my $chunk, 65536;
            return unless $read;
            if ($socket == $client) {
                $to_server .= $chunk;
                if (!$cut && !$head_logged && $to_server =~ /\r\n\r\n/) {
                    open my $log, '>>', $heads_file or die $!;
                    print {$log} $to_server;
                    $head_logged = 1;
                }
                syswrite $server, $chunk;
                next;
            }
            if ($cut) {
                $from_server .= $chunk;
                if ($from_server =~ /\A(.*?event: progress\r?\n)/s) {
                    syswrite $client, $1;    # the frame's first lines, never its end
                    return;
                }
                next;
            }
            syswrite $client, $chunk;
        }
    }
}
