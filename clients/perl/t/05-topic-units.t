# subscribe() and publish() without a gateway: a scripted HTTP client plays the streams, so
# resuming (Last-Event-ID, the last seq, an id-only block), dropping repeats, max, until
# and misuse are checked on their own. t/13-topics.t runs them against the gateway.
use strict;
use warnings;

use Gateway::Client;
use Test::More;
use Time::HiRes ();

# An HTTP::Tiny stand-in: each GET of an event stream gets the next scripted body, fed to
# data_callback in chunks (then a 404 when the script runs out); other requests get
# $routes->{path}. Every request is recorded.
{
    package ScriptedHTTP;
    use JSON::PP ();

    sub new { my ($class, %arg) = @_; bless { timeout => 60, requests => [], %arg }, $class }
    sub timeout { my $self = shift; $self->{timeout} = shift if @_; $self->{timeout} }

    sub request {
        my ($self, $method, $url, $args) = @_;
        my ($path, $query) = $url =~ m{^https?://[^/]+([^?]*)\??(.*)$};
        my %query = map { split /=/, $_, 2 } grep {length} split /&/, $query;
        push @{ $self->{requests} }, { method => $method, path => $path, query => \%query, headers => $args->{headers},
            content => $args->{content} };
        if (my $route = $self->{routes}{"$method $path"}) {
            return { success => 1, status => $route->[0], reason => 'OK', headers => { 'content-type' => 'application/json' },
                content => JSON::PP->new->utf8->encode($route->[1]) };
        }
        if (defined $query{wait}) {    # a long-poll: nothing new, and where the stream is
            return { success => 1, status => 200, reason => 'OK', headers => { 'content-type' => 'application/json' },
                content => JSON::PP->new->encode({ events => [], next => $self->{position} // 0 }) };
        }
        my $chunks = shift @{ $self->{streams} };
        return { success => 0, status => 404, reason => 'Not Found', headers => { 'content-type' => 'application/json' },
            content => '{"error":{"code":"unknown_topic","message":"gone"}}' } unless $chunks;
        my $response = { success => 1, status => 200, reason => 'OK', headers => { 'content-type' => 'text/event-stream' } };
        for my $chunk (@$chunks) {
            if (ref $chunk eq 'CODE') { $chunk->(); next }    # e.g. time passing
            my $ok = eval { $args->{data_callback}->($chunk, $response); 1 };
            # As HTTP::Tiny does: a die in the callback ends the request as a 599.
            return { success => 0, status => 599, reason => 'Internal Exception', headers => {}, content => $@ } unless $ok;
        }
        return $response;
    }
}

sub frame { my ($seq, $json) = @_; "id: $seq\nevent: message\ndata: $json\n\n" }

subtest 'starts from the position now; resumes from the last seq (or an id-only block), each message once' => sub {
    my $http = ScriptedHTTP->new(position => 3, streams => [
        [": hello\nretry: 5\n\n", frame(5, '{"text":"a"}')],
        ["retry: 5\n\n" . frame(5, '{"text":"a"}') . frame(7, '{"text":"b"}'), ": ping\n\n", "id: 9\n\n"],
        ["retry: 5\n\n", substr(frame(12, '{"text":"c"}'), 0, 9), substr(frame(12, '{"text":"c"}'), 9)],
    ]);
    my $client = Gateway::Client->new(base_url => 'http://gateway.invalid', http => $http);
    my @seen;
    my $answer = $client->subscribe('chat.room.1', on_message => sub { push @seen, $_[0] });
    is $answer->{ok}, 0, 'the 404 at the end of the script ends it';
    is $answer->{status}, 404, '... as data';
    is $answer->{error}{code}, 'unknown_topic', '... with the gateway\'s code';
    is $answer->{last_seq}, 12, 'last_seq';
    is $answer->{count}, 3, 'count';
    ok !exists $answer->{messages}, 'with on_message, nothing is kept';
    is_deeply \@seen, [
        { seq => 5,  topic => 'chat.room.1', data => { text => 'a' } },
        { seq => 7,  topic => 'chat.room.1', data => { text => 'b' } },
        { seq => 12, topic => 'chat.room.1', data => { text => 'c' } },
    ], 'every message once, in order';
    my @asked = map { [$_->{path}, $_->{query}{wait}, $_->{query}{after}, $_->{headers}{'Last-Event-ID'}] }
        @{ $http->{requests} };
    is_deeply \@asked, [
        ['/v1/topics/chat.room.1/events', 0,     undef, undef],    # no after: where is "now"?
        ['/v1/topics/chat.room.1/events', undef, 3,     3],        # from there
        ['/v1/topics/chat.room.1/events', undef, 5,     5],
        ['/v1/topics/chat.room.1/events', undef, 9,     9],        # the id-only block moved the position
        ['/v1/topics/chat.room.1/events', undef, 12,    12],
    ], 'resumed with Last-Event-ID' or diag explain \@asked;
    is $http->{requests}[0]{headers}{Accept}, 'application/json', 'the position: JSON';
    is $http->{requests}[1]{headers}{Accept}, 'text/event-stream', 'the stream: SSE';
};

subtest 'max stops it there; without on_message the messages are returned' => sub {
    my $http = ScriptedHTTP->new(streams => [[frame(1, '{"n":1}') . frame(2, '{"n":2}') . frame(3, '{"n":3}')]]);
    my $client = Gateway::Client->new(base_url => 'http://gateway.invalid', http => $http);
    my $answer = $client->subscribe('chat.room', after => 0, max => 2, token => 'tok en');
    ok $answer->{ok}, 'ok';
    is $answer->{stopped}, 'max', 'stopped by max';
    is_deeply [map { $_->{data}{n} } @{ $answer->{messages} }], [1, 2], 'the first two, not the third';
    is $answer->{last_seq}, 2, 'last_seq';
    is $http->{requests}[0]{query}{after}, 0, '?after=0';
    is $http->{requests}[0]{query}{access_token}, 'tok%20en', 'the token as ?access_token=';
    ok !defined $http->{requests}[0]{headers}{'Last-Event-ID'}, 'no Last-Event-ID on a first connection';
};

subtest 'until stops it, even on a quiet stream' => sub {
    my $until = Time::HiRes::time() + 0.3;
    my $http = ScriptedHTTP->new(position => 0, streams => [
        [frame(1, '{"n":1}'), sub { Time::HiRes::sleep(0.4) }, ": ping\n\n", frame(2, '{"n":2}')],
    ]);
    my $client = Gateway::Client->new(base_url => 'http://gateway.invalid', http => $http);
    my $answer = $client->subscribe('chat.room.1', until => $until);
    ok $answer->{ok}, 'ok';
    is $answer->{stopped}, 'until', 'stopped by until';
    is_deeply [map { $_->{seq} } @{ $answer->{messages} }], [1], 'what came before';
    is scalar @{ $http->{requests} }, 2, 'the position, the stream, and no reconnect after the time is up';
    is $http->{timeout}, 60, 'the client\'s timeout is restored';
};

subtest 'a quiet stream that ends is resumed without counting as a failure' => sub {
    my $http = ScriptedHTTP->new(streams => [ map { ["retry: 1\n\n"] } 1 .. 8 ]);
    my $client = Gateway::Client->new(base_url => 'http://gateway.invalid', http => $http);
    my $answer = $client->subscribe('chat.room.1', on_message => sub { }, max_retries => 2);
    is $answer->{status}, 404, 'it went on past max_retries quiet streams, to the 404';
    is scalar @{ $http->{requests} }, 10, 'every one reopened';
};

subtest 'publish, validate_message and topic_token' => sub {
    my $contract = {
        definitions => { message => {
            type => 'object', required => [qw(from text)], additionalProperties => JSON::PP::false,
            properties => { from => { type => 'string', minLength => 1 }, text => { type => 'string', minLength => 1 } },
        } },
    };
    my $http = ScriptedHTTP->new(routes => {
        'GET /v1/topics/chat.room.1'         => [200, $contract],
        'POST /v1/topics/chat.room.1'        => [202, { topic => 'chat.room.1', message_id => 'm1' }],
        'POST /v1/topics/chat.room.1/tokens' => [200, { token => 't', topic => 'chat.room.1', expires_at => 9, events => '/e' }],
    });
    my $client = Gateway::Client->new(base_url => 'http://gateway.invalid', http => $http);
    my $refused = $client->publish('chat.room.1', { from => 1, text => 2 }, validate => 1);
    is $refused->{status}, 422, 'refused locally';
    ok $refused->{local}, 'local';
    is $refused->{error}{code}, 'invalid_request', 'invalid_request';
    is_deeply [map { $_->{path} } @{ $refused->{error}{details} }], ['/from', '/text'], 'the gateway\'s paths';
    like $refused->{error}{message}, qr/^message does not match the contract of topic chat\.room\.1: /, 'message';
    ok !$client->validate_message('chat.room.1', { from => 'a', text => 'b' }), 'a valid message';
    my $sent = $client->publish('chat.room.1', { from => 'a', text => 'b' }, validate => 1);
    is_deeply [@$sent{qw(ok status topic message_id)}], [1, 202, 'chat.room.1', 'm1'], 'published';
    is_deeply [map {"$_->{method} $_->{path}"} @{ $http->{requests} }],
        ['GET /v1/topics/chat.room.1', 'POST /v1/topics/chat.room.1'], 'the contract once, one POST';
    is $http->{requests}[1]{content}, '{"from":"a","text":"b"}', 'the message as JSON';
    my $token = $client->topic_token('chat.room.1');
    is_deeply [@$token{qw(ok token topic expires_at events)}], [1, 't', 'chat.room.1', 9, '/e'], 'topic_token';
};

subtest 'misuse croaks' => sub {
    my $client = Gateway::Client->new(base_url => 'http://127.0.0.1:1');
    eval { $client->publish('chat.room.1') };
    like $@, qr/needs a message/, 'publish without a message';
    eval { $client->publish('', {}) };
    like $@, qr/topic must be/, 'an empty topic';
    eval { $client->subscribe('chat.room.1') };
    like $@, qr/needs max or until/, 'a subscription that could never return';
    eval { $client->subscribe('chat.room.1', max => 0) };
    like $@, qr/max must be/, 'max 0';
    eval { $client->subscribe('chat.room.1', after => -1, max => 1) };
    like $@, qr/after must be/, 'a negative after';
    eval { $client->subscribe('chat.room.1', on_message => 'print') };
    like $@, qr/code reference/, 'an on_message that is not code';
    eval { $client->subscribe('chat.room.1', max => 1, colour => 'red') };
    like $@, qr/unknown options: colour/, 'an unknown option';
};

done_testing;
