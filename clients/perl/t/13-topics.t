# Topics (issue 14) against the running gateway (GATEWAY_URL), which serves
# schemas/topics/ (chat.room): publish, subscribe (replay, live, resumed after a cut,
# family vs key, until), 422/404/400 as data, local validation, and subscribe tokens on
# the auth gateway (GATEWAY_AUTH_URL) when its key has the topic scopes. Every subtest
# talks in rooms of its own (chat.room.<random>).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempfile);
use Gateway::Client;
use HTTP::Tiny;
use POSIX ();
use Test::More;
use Time::HiRes ();
use TestGateway qw(gateway_url need_gateway read_json schemas_dir start_proxy);

need_gateway();
my $gateway = Gateway::Client->new(base_url => gateway_url(), timeout => 30);

sub new_room { sprintf 'chat.room.pl-%s-%04x%04x', $$, rand 0x10000, rand 0x10000 }
sub line { my ($topic, $n) = @_; { from => 'perl', text => "$topic #$n" } }
# A bound for every wait on a subscription (they stop by max; this only catches a hang).
sub soon { Time::HiRes::time() + 30 }

sub increasing {
    my @seqs = @_;
    return !grep { $seqs[$_] <= $seqs[$_ - 1] } 1 .. $#seqs;
}

# An HTTP::Tiny that runs $on_open once a response body starts to arrive (the stream is
# open), and records each request.
{
    package WatchedHTTP;
    our @ISA = ('HTTP::Tiny');

    sub request {
        my ($self, $method, $url, $args) = @_;
        (my $path = $url) =~ s{^https?://[^/]+}{};
        $path =~ s/\?.*//s;
        push @{ $self->{seen} }, "$method $path";
        if ($self->{on_open} && $args && $args->{data_callback}) {
            my ($inner, $opened) = ($args->{data_callback}, 0);
            $args = { %$args, data_callback => sub { $self->{on_open}->() unless $opened++; $inner->(@_) } };
        }
        return $self->SUPER::request($method, $url, $args);
    }
}

subtest 'topics and topic_contract' => sub {
    my $topics = $gateway->topics;
    ok $topics->{ok}, 'topics ok' or diag explain $topics;
    my ($chat) = grep { $_->{name} eq 'chat.room' } @{ $topics->{topics} // [] };
    ok $chat, 'lists chat.room';
    is $chat->{events}, '/v1/topics/chat.room/events', 'with its stream';
    my $contract = $gateway->topic_contract(new_room());
    ok $contract->{ok}, 'the contract of a key of the family';
    ok $contract->{contract}{definitions}{message}, 'has definitions.message';
};

subtest 'publish, then subscribe(after => 0) finds the messages' => sub {
    my $topic = new_room();
    my $sent = $gateway->publish($topic, line($topic, 1));
    ok $sent->{ok}, 'published' or diag explain $sent;
    is $sent->{status}, 202, 'status 202';
    is $sent->{topic}, $topic, 'the topic';
    ok length $sent->{message_id}, 'a message id';
    $gateway->publish($topic, line($topic, 2));

    my $got = $gateway->subscribe($topic, after => 0, max => 2, until => soon());
    ok $got->{ok}, 'ok' or diag explain $got;
    is $got->{stopped}, 'max', 'stopped by max';
    is_deeply [map { $_->{data} } @{ $got->{messages} }], [line($topic, 1), line($topic, 2)], 'both, in order';
    is_deeply [map { $_->{topic} } @{ $got->{messages} }], [$topic, $topic], 'topic';
    ok increasing(map { $_->{seq} } @{ $got->{messages} }), 'seqs increase';
    is $got->{last_seq}, $got->{messages}[1]{seq}, 'last_seq';

    my $rest = $gateway->subscribe($topic, after => $got->{messages}[0]{seq}, max => 1, until => soon());
    is_deeply $rest->{messages}, [$got->{messages}[1]], 'after => seq starts past it';
};

subtest 'subscribe without after gets what is published from then on, in order' => sub {
    my $topic = new_room();
    $gateway->publish($topic, line($topic, 0));    # before: never seen
    my $publisher;
    my $http = WatchedHTTP->new(timeout => 30);
    $http->{on_open} = sub {    # the stream is open: publish, from another process
        $publisher = fork // die "cannot fork: $!";
        return if $publisher;
        my $other = Gateway::Client->new(base_url => gateway_url());
        $other->publish($topic, line($topic, $_))->{ok} || POSIX::_exit(1) for 1 .. 5;
        POSIX::_exit(0);
    };
    my @seen;
    my $got = Gateway::Client->new(base_url => gateway_url(), http => $http)
        ->subscribe($topic, max => 5, until => soon(), on_message => sub { push @seen, $_[0] });
    waitpid $publisher, 0 if $publisher;
    is $?, 0, 'the publisher published';
    ok $got->{ok}, 'ok' or diag explain $got;
    is_deeply [map { $_->{data} } @seen], [map { line($topic, $_) } 1 .. 5], 'exactly those, in order';
    ok increasing(map { $_->{seq} } @seen), 'seqs increase';
    ok !exists $got->{messages}, 'with on_message, nothing is kept';
    is $got->{count}, 5, 'count';
};

subtest 'a subscription without after, cut before its first message, misses nothing published meanwhile' => sub {
    my $topic = new_room();
    my (undef, $heads_file) = tempfile(UNLINK => 1);
    # The first two stream connections (HTTP::Tiny repeats a GET cut mid-body once) are
    # cut right after the stream's opening block, before any message.
    my ($proxy_pid, $proxy_port) = start_proxy(gateway_url(), $heads_file, sub {
        my ($connection, $received, $request) = @_;
        return undef if $connection > 2 || $request !~ m{^Accept: text/event-stream}mi;
        return $received =~ /\A(.*\r\n\r\n.*?retry: [0-9]+\r?\n\r?\n)/s ? length $1 : undef;
    });
    my ($publisher, @seen);
    my $http = WatchedHTTP->new(timeout => 30);
    $http->{on_open} = sub {    # the stream is open (and being cut): publish meanwhile
        $publisher = fork // die "cannot fork: $!";
        return if $publisher;
        my $other = Gateway::Client->new(base_url => gateway_url());
        $other->publish($topic, line($topic, $_))->{ok} || POSIX::_exit(1) for 1 .. 2;
        POSIX::_exit(0);
    };
    my $answer = eval {
        Gateway::Client->new(base_url => "http://127.0.0.1:$proxy_port", http => $http)
            ->subscribe($topic, max => 2, until => soon(), on_message => sub { push @seen, $_[0] });
    };
    my $error = $@;
    waitpid $publisher, 0 if $publisher;
    kill 'TERM', $proxy_pid;
    waitpid $proxy_pid, 0;
    die $error if $error;
    ok $answer->{ok}, 'ok' or diag explain $answer;
    is_deeply [map { $_->{data} } @seen], [line($topic, 1), line($topic, 2)], 'both messages' or diag explain \@seen;
    my $heads = do { open my $file, '<', $heads_file or die $!; local $/; <$file> };
    my @starts = $heads =~ m{^GET /v1/topics/\Q$topic\E/events\?after=([0-9]+)}mg;
    ok @starts >= 2, 'the stream was reopened' or diag $heads;
    is_deeply [@starts[0, 1]], [$starts[0], $starts[0]], 'from the same seq, the position when it began';
};

subtest 'a cut connection resumes by Last-Event-ID: after message k come k+1.. exactly once' => sub {
    my $topic = new_room();
    my (undef, $heads_file) = tempfile(UNLINK => 1);
    # Connections are cut right after their third complete message, until one resumes
    # (HTTP::Tiny silently repeats a GET cut mid-body once, from the start: cut that too).
    my ($proxy_pid, $proxy_port) = start_proxy(gateway_url(), $heads_file, sub {
        my ($connection, $received, $request) = @_;
        return undef if $request =~ /^Last-Event-ID:/mi;
        return $received =~ /\A((?:.*?event: message\r?\ndata: [^\r\n]*\r?\n\r?\n){3})/s ? length $1 : undef;
    });
    my @seen;
    my $answer = eval {
        $gateway->publish($topic, line($topic, $_)) for 1 .. 3;
        Gateway::Client->new(base_url => "http://127.0.0.1:$proxy_port", timeout => 30)->subscribe($topic,
            after => 0, max => 6, until => soon(), on_message => sub {
                push @seen, $_[0];
                # Published while the connection is being cut: found on the way back.
                if (@seen == 3) { $gateway->publish($topic, line($topic, $_)) for 4 .. 6 }
            });
    };
    my $error = $@;
    kill 'TERM', $proxy_pid;
    waitpid $proxy_pid, 0;
    die $error if $error;
    ok $answer->{ok}, 'ok' or diag explain $answer;
    is_deeply [map { $_->{data} } @seen], [map { line($topic, $_) } 1 .. 6], 'every message once, in order';
    ok increasing(map { $_->{seq} } @seen), 'seqs increase';
    my $heads = do { open my $file, '<', $heads_file or die $!; local $/; <$file> };
    like $heads, qr/^Last-Event-ID: \Q$seen[2]{seq}\E\r?$/mi, 'resumed after the third (its seq as Last-Event-ID)'
        or diag $heads;
};

subtest 'a key gets that key only; the family gets every key, in order' => sub {
    my ($a_room, $b_room) = (new_room(), new_room());
    my @order = ([$a_room, 1], [$b_room, 1], [$a_room, 2], [$b_room, 2]);
    $gateway->publish($_->[0], line(@$_)) for @order;
    my $only_a = $gateway->subscribe($a_room, after => 0, max => 2, until => soon())->{messages};
    is_deeply [map { $_->{data} } @$only_a], [line($a_room, 1), line($a_room, 2)], "$a_room: its own two";
    my $only_b = $gateway->subscribe($b_room, after => 0, max => 2, until => soon())->{messages};
    is_deeply [map { $_->{data} } @$only_b], [line($b_room, 1), line($b_room, 2)], "$b_room: its own two";

    # The family, from just before a's first: the seqs are the stream's, the same for all.
    my $family = $gateway->subscribe('chat.room', after => $only_a->[0]{seq} - 1, max => 4, until => soon());
    is_deeply [map { $_->{data} } @{ $family->{messages} }], [map { line(@$_) } @order], 'chat.room: all four, in order';
    is_deeply [map { $_->{seq} } @{ $family->{messages} }],
        [$only_a->[0]{seq}, $only_b->[0]{seq}, $only_a->[1]{seq}, $only_b->[1]{seq}], 'the same seqs';
    is_deeply [map { $_->{topic} } @{ $family->{messages} }], [('chat.room') x 4], 'topic: the one subscribed to';
};

subtest 'until ends a quiet subscription' => sub {
    my $started = Time::HiRes::time();
    my $got = $gateway->subscribe(new_room(), until => $started + 1.5, on_message => sub { });
    my $took = Time::HiRes::time() - $started;
    ok $got->{ok}, 'ok' or diag explain $got;
    is $got->{stopped}, 'until', 'stopped by until';
    is $got->{count}, 0, 'nothing came';
    ok $took >= 1.4 && $took < 5, "returned on time ($took s)";
};

subtest 'a message against the contract: the 422 of the shared vectors; validate refuses it unsent, alike' => sub {
    my $vectors = read_json(schemas_dir() . '/vectors/chat.room.json');
    my $topic = new_room();
    my $http = WatchedHTTP->new(timeout => 30);
    my $checked = Gateway::Client->new(base_url => gateway_url(), validate => 1, http => $http);
    for my $case (grep { !$_->{valid} } @{ $vectors->{cases} }) {
        my $served = $gateway->publish($topic, $case->{data});
        is $served->{status}, 422, "$case->{description}: 422";
        is $served->{error}{code}, 'invalid_request', '... invalid_request';
        ok !$served->{local}, '... from the gateway';
        my @paths = map { $_->{path} } @{ $served->{error}{details} };
        is_deeply \@paths, $case->{details}, '... with the details of the vector' or diag explain $served;
        my $refused = $checked->publish($topic, $case->{data});
        ok $refused->{local}, '... refused locally';
        is $refused->{status}, 422, '... as a 422';
        is_deeply [map { $_->{path} } @{ $refused->{error}{details} }], \@paths, '... at the same paths';
    }
    is_deeply $http->{seen}, ["GET /v1/topics/$topic"], 'only the contract was fetched, once';
    ok $checked->publish($topic, line($topic, 1))->{ok}, 'a valid message goes through';
    is scalar(grep {/^POST/} @{ $http->{seen} }), 1, 'sent once';
    my $per_call = $gateway->publish($topic, { from => 'perl' }, validate => 1);
    ok $per_call->{local}, 'validate => 1 per call, on a client that does not validate';
    my $room = $gateway->subscribe($topic, after => 0, max => 1, until => soon());
    is_deeply [map { $_->{data} } @{ $room->{messages} }], [line($topic, 1)], 'nothing invalid reached the room';
};

subtest 'unknown topics are 404, malformed ones 400, as data' => sub {
    my $sent = $gateway->publish('no.such.topic', { text => 'x' });
    is $sent->{status}, 404, 'publish: 404';
    is $sent->{error}{code}, 'unknown_topic', 'unknown_topic';
    is $gateway->topic_contract('no.such.topic')->{error}{code}, 'unknown_topic', 'topic_contract: unknown_topic';
    my $got = $gateway->subscribe('no.such.topic', max => 1, until => soon());
    is $got->{status}, 404, 'subscribe: 404';
    is $got->{error}{code}, 'unknown_topic', 'unknown_topic';
    is_deeply $got->{messages}, [], 'no messages';
    is $gateway->publish('chat.room.*', line('x', 1))->{error}{code}, 'invalid_topic', 'publish chat.room.*: invalid_topic';
    my $bad = $gateway->subscribe('chat..room', max => 1, until => soon());
    is $bad->{status}, 400, 'subscribe chat..room: 400';
    is $bad->{error}{code}, 'invalid_topic', 'invalid_topic';
};

subtest 'subscribe tokens (auth on)' => sub {
    my ($url, $key) = @ENV{qw(GATEWAY_AUTH_URL GATEWAY_AUTH_TOKEN)};
    plan skip_all => 'set GATEWAY_AUTH_URL and GATEWAY_AUTH_TOKEN (a gateway with auth on)' unless $url && $key;
    my $owner = Gateway::Client->new(base_url => $url, headers => { Authorization => "Bearer $key" });
    my $stranger = Gateway::Client->new(base_url => $url);
    my $topic = new_room();
    my $minted = $owner->topic_token($topic);
    plan skip_all => "the auth gateway's key cannot mint subscribe tokens ($minted->{status} $minted->{error}{code})"
        if !$minted->{ok} && ($minted->{status} == 403 || $minted->{status} == 404);
    ok $minted->{ok}, 'minted' or diag explain $minted;
    is $minted->{topic}, $topic, 'for the topic';
    ok $minted->{expires_at} > time, 'expires later';
    like $minted->{events}, qr{^/v1/topics/\Q$topic\E/events\?access_token=}, 'events';

    ok $owner->publish($topic, line($topic, 1))->{ok}, 'the owner publishes';
    is $stranger->subscribe($topic, after => 0, max => 1, until => soon())->{status}, 401, 'without the token: 401';
    my $got = $stranger->subscribe($topic, after => 0, max => 1, until => soon(), token => $minted->{token});
    ok $got->{ok}, 'with only ?access_token it subscribes' or diag explain $got;
    is_deeply [map { $_->{data} } @{ $got->{messages} }], [line($topic, 1)], 'the message';
    for my $other (new_room(), 'chat.room') {
        my $refused = $stranger->subscribe($other, after => 0, max => 1, until => soon(), token => $minted->{token});
        ok $refused->{status} == 401 || $refused->{status} == 403, "not $other ($refused->{status})";
    }
    my $publish = HTTP::Tiny->new->post("$url/v1/topics/$topic?access_token=$minted->{token}",
        { headers => { 'Content-Type' => 'application/json' }, content => '{"from":"x","text":"y"}' });
    ok $publish->{status} == 401 || $publish->{status} == 403, "read-only ($publish->{status})";
};

done_testing;
