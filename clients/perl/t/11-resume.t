# events() resumes with Last-Event-ID when the connection drops mid-stream: a tiny TCP
# proxy in a child process cuts the first two connections in the middle of an SSE frame
# (HTTP::Tiny silently repeats a broken GET once, from the start: that is the second),
# and every event must still arrive exactly once.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempfile);
use Gateway::Client;
use Test::More;
use TestGateway qw(gateway_url need_gateway start_proxy);

need_gateway();
gateway_url() =~ m{^http://[^:/]+:[0-9]+} or plan skip_all => 'needs an http://host:port GATEWAY_URL';

my (undef, $heads_file) = tempfile(UNLINK => 1);
# The first two connections are cut right after the "event: progress" line of the first
# progress frame (before its data); later ones pass through.
my ($proxy_pid, $proxy_port) = start_proxy(gateway_url(), $heads_file, sub {
    my ($connection, $received) = @_;
    return undef if $connection > 2;
    return $received =~ /\A(.*?event: progress\r?\n)/s ? length $1 : undef;
});
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
